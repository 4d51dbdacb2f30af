package blackhole

import net.jpountz.xxhash.XXHashFactory

import java.io.InputStream

/** A streaming reader of the LZ4 frame format (lz4 frame spec 1.6): concatenated frames,
  * skippable frames, independent and linked blocks, stored (uncompressed) blocks, header, block and
  * content checksums, content size. Every read of the input is bounds-checked: corrupt input gives
  * an error, never an out-of-bounds access.
  *
  * Why not lz4-java's LZ4FrameInputStream: it rejects linked blocks ("BLOCK_INDEPENDENCE must be
  * set"), which other writers (liblz4's default, python-lz4) produce, and its block decompressors
  * cannot take the previous block as a dictionary. The block decoder here is the LZ4 block format
  * with the frame's history (at most 64 KiB) in front of the block.
  *
  * Like liblz4's LZ4F_decompress, the bytes of a stored block are passed on as they arrive, so a
  * file cut inside a stored block yields the part before the cut.
  */
object Lz4Frames:
  enum Outcome:
    case Complete // the input ended at a frame boundary (or was empty)
    case Truncated(what: String) // the input ended inside a frame
    case Corrupt(why: String) // not a valid frame

  private val Magic = 0x184d2204
  private val Window = 64 * 1024
  private val xx = XXHashFactory.safeInstance()

  private final class Stop(val outcome: Outcome) extends Exception(null, null, false, false)

  /** Decodes `in` to its end; `sink(buf, off, len)` receives the decompressed bytes in order. */
  def decode(in: InputStream, sink: (Array[Byte], Int, Int) => Unit): Outcome =
    try
      new Decoder(in, sink).run()
      Outcome.Complete
    catch case s: Stop => s.outcome

  private final class Decoder(in: InputStream, sink: (Array[Byte], Int, Int) => Unit):
    private val word = new Array[Byte](8)
    private var window = new Array[Byte](0) // history (linked blocks) then the block being decoded
    private var packed = new Array[Byte](0) // a compressed block as read

    private def truncated(what: String): Nothing = throw new Stop(Outcome.Truncated(what))
    private def corrupt(why: String): Nothing = throw new Stop(Outcome.Corrupt(why))

    /** Reads up to `len` bytes (fewer only at the end of the input); returns how many. */
    private def fill(b: Array[Byte], off: Int, len: Int): Int =
      var n = 0
      while n < len do
        val r = in.read(b, off + n, len - n)
        if r < 0 then return n
        n += r
      n

    private def exactly(b: Array[Byte], off: Int, len: Int, what: String): Unit =
      if fill(b, off, len) < len then truncated(what)

    private def le32(b: Array[Byte], at: Int): Int =
      (b(at) & 0xff) | (b(at + 1) & 0xff) << 8 | (b(at + 2) & 0xff) << 16 | (b(at + 3) & 0xff) << 24

    private def u32(what: String): Int =
      exactly(word, 0, 4, what)
      le32(word, 0)

    def run(): Unit =
      var more = true
      while more do
        val got = fill(word, 0, 4)
        if got == 0 then more = false // end of input between frames
        else if got < 4 then truncated("frame magic number")
        else
          val magic = le32(word, 0)
          if magic == Magic then frame()
          else if (magic & 0xfffffff0) == 0x184d2a50 then skip(u32("skippable frame size") & 0xffffffffL)
          else corrupt(f"unknown frame magic number 0x$magic%08x")

    private def skip(n: Long): Unit =
      var left = n
      val buf = new Array[Byte](8192)
      while left > 0 do
        val r = fill(buf, 0, math.min(left, buf.length).toInt)
        if r == 0 then truncated("skippable frame")
        left -= r

    private def frame(): Unit =
      // Frame descriptor: FLG, BD, [content size], [dictionary id], HC.
      val desc = new Array[Byte](15)
      exactly(desc, 0, 2, "frame descriptor")
      val flg = desc(0) & 0xff
      val bd = desc(1) & 0xff
      if (flg >>> 6) != 1 then corrupt(s"frame version ${flg >>> 6} unsupported")
      if (flg & 0x02) != 0 || (bd & 0x8f) != 0 then corrupt("reserved bits set in the frame descriptor")
      val independent = (flg & 0x20) != 0
      val blockChecksum = (flg & 0x10) != 0
      val hasSize = (flg & 0x08) != 0
      val contentChecksum = (flg & 0x04) != 0
      val hasDict = (flg & 0x01) != 0
      val sizeId = (bd >>> 4) & 0x07
      if sizeId < 4 then corrupt(s"block size id $sizeId unsupported")
      val maxBlock = 1 << (8 + 2 * sizeId)
      var n = 2
      if hasSize then { exactly(desc, n, 8, "frame descriptor"); n += 8 }
      if hasDict then { exactly(desc, n, 4, "frame descriptor"); n += 4 }
      exactly(desc, n, 1, "frame descriptor")
      val hc = (xx.hash32().hash(desc, 0, n, 0) >>> 8) & 0xff
      if hc != (desc(n) & 0xff) then corrupt("frame descriptor checksum mismatch")
      if hasDict then corrupt("frames with a dictionary id are not supported")
      val contentSize =
        if !hasSize then -1L
        else
          var v = 0L
          for i <- 7 to 0 by -1 do v = (v << 8) | (desc(2 + i) & 0xffL)
          v

      if window.length < 2 * Window + maxBlock then window = new Array[Byte](2 * Window + maxBlock)
      if packed.length < maxBlock then packed = new Array[Byte](maxBlock)
      val content = if contentChecksum then xx.newStreamingHash32(0) else null
      var total = 0L
      var pos = 0 // where the next block is decoded in `window`; before it: this frame's history
      var ended = false
      while !ended do
        val word0 = u32("block size")
        if word0 == 0 then // end mark
          if contentChecksum && u32("content checksum") != content.getValue then corrupt("content checksum mismatch")
          if hasSize && total != contentSize then corrupt(s"content size $total, $contentSize declared")
          ended = true
        else
          val stored = (word0 & 0x80000000) != 0
          val len = word0 & 0x7fffffff
          if len > maxBlock then corrupt(s"block of $len bytes over the frame's maximum $maxBlock")
          if independent then pos = 0
          else if pos + maxBlock > window.length then
            // Keep the last 64 KiB as the next block's history.
            System.arraycopy(window, pos - Window, window, 0, Window)
            pos = Window
          val produced =
            if stored then
              // Passed on as it arrives (a cut inside a stored block yields what came before the cut).
              val got = fill(window, pos, len)
              if got > 0 then
                if content != null then content.update(window, pos, got)
                sink(window, pos, got)
              if got < len then truncated("block")
              if blockChecksum && u32("block checksum") != xx.hash32().hash(window, pos, len, 0) then corrupt("block checksum mismatch")
              len
            else
              exactly(packed, 0, len, "block")
              if blockChecksum && u32("block checksum") != xx.hash32().hash(packed, 0, len, 0) then corrupt("block checksum mismatch")
              val m = block(packed, len, window, pos, pos + maxBlock, if independent then pos else 0)
              if content != null then content.update(window, pos, m)
              sink(window, pos, m)
              m
          total += produced
          pos += produced

    /** Decodes one LZ4 block `src[0, srcLen)` into `dst` at `start` (at most up to `limit`);
      * matches may reach back to `low` (the history of linked blocks). Returns the bytes written.
      */
    private def block(src: Array[Byte], srcLen: Int, dst: Array[Byte], start: Int, limit: Int, low: Int): Int =
      var s = 0
      var d = start
      var done = false
      while !done do
        if s >= srcLen then corrupt("LZ4 block ends without its last literals")
        val token = src(s) & 0xff
        s += 1
        var lit = token >>> 4
        if lit == 15 then
          var b = 255
          while b == 255 do
            if s >= srcLen then corrupt("LZ4 block: literal length runs past the block")
            b = src(s) & 0xff
            s += 1
            lit += b
        if lit > srcLen - s || lit > limit - d then corrupt("LZ4 block: literals run past the block")
        System.arraycopy(src, s, dst, d, lit)
        s += lit
        d += lit
        if s == srcLen then done = true // the last sequence has literals only
        else
          if s + 2 > srcLen then corrupt("LZ4 block: match offset runs past the block")
          val offset = (src(s) & 0xff) | (src(s + 1) & 0xff) << 8
          s += 2
          if offset == 0 || d - offset < low then corrupt("LZ4 block: match offset out of range")
          var mlen = token & 15
          if mlen == 15 then
            var b = 255
            while b == 255 do
              if s >= srcLen then corrupt("LZ4 block: match length runs past the block")
              b = src(s) & 0xff
              s += 1
              mlen += b
          mlen += 4
          if mlen > limit - d then corrupt("LZ4 block: match runs past the block's maximum size")
          val from = d - offset
          if offset >= mlen then System.arraycopy(dst, from, dst, d, mlen)
          else // overlapping: the match repeats bytes it is writing, byte by byte
            var i = 0
            while i < mlen do
              dst(d + i) = dst(from + i)
              i += 1
          d += mlen
      d - start
