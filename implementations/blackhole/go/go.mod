module langbench/blackhole

go 1.26.0

require (
	github.com/google/flatbuffers v23.5.26+incompatible
	github.com/pierrec/lz4/v4 v4.1.33
	github.com/valyala/fasthttp v1.78.0
	golang.org/x/sync v0.25.0
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/molecule-man/go-brrr v1.3.1 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
)
