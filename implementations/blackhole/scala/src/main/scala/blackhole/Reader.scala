package blackhole

import fbr.Request

import java.io.{BufferedInputStream, FileInputStream, IOException}
import java.nio.charset.StandardCharsets.UTF_8
import java.nio.file.{Files, Path, Paths}
import java.nio.{ByteBuffer, ByteOrder}
import java.security.MessageDigest
import scala.jdk.CollectionConverters.*
import scala.util.Using

/** The reader: `reader DIR` decodes every *.lz4 and *.lz4.tmp file of DIR (files sorted by name,
  * bytewise) and prints one JSON line: ok, files, tmp_files, records, stream_bytes (the bytes of
  * the complete records read: 8-byte length and buffer each), file_bytes, truncated_tmp, digest (SHA-256 over every record's five fields, each as a 4-byte little-endian
  * length and its bytes), error. Exit 0 when every file decoded, else 1.
  *
  * LZ4 frames are decoded by Lz4Frames (concatenated and skippable frames, independent and linked
  * blocks, every checksum; bounds-checked pure Scala: the files are untrusted input). The FlatBuffers Java
  * runtime has no verifier: every offset of a record is checked against its buffer before the
  * generated accessors read it.
  */
object Reader:
  final class FormatError(msg: String) extends Exception(msg)

  private val MaxRecord = 64L << 20

  final class Stats:
    var files = 0
    var tmpFiles = 0
    var records = 0L
    var streamBytes = 0L
    var fileBytes = 0L
    var truncatedTmp = 0
    val digest: MessageDigest = MessageDigest.getInstance("SHA-256")

  def main(args: Array[String]): Unit =
    if args.length != 1 then
      System.err.println("usage: reader DIR")
      sys.exit(2)
    val dir = Paths.get(args(0))
    val stats = new Stats
    val error: Option[String] =
      if !Files.isDirectory(dir) then Some(s"${args(0)}: not a folder")
      else
        try
          recordFiles(dir).foreach(readFile(_, stats))
          None
        catch
          case e: FormatError => Some(e.getMessage)
          case e: IOException => Some(s"$e")
          case e: Exception   => Some(s"unexpected: $e") // never a crash without the JSON line
    val ok = error.isEmpty
    val digest = stats.digest.digest().map(b => f"${b & 0xff}%02x").mkString
    println(
      s"""{"ok": $ok, "files": ${stats.files}, "tmp_files": ${stats.tmpFiles}, "records": ${stats.records}, """ +
        s""""stream_bytes": ${stats.streamBytes}, "file_bytes": ${stats.fileBytes}, "truncated_tmp": ${stats.truncatedTmp}, """ +
        s""""digest": "$digest", "error": ${error.fold("null")(jsonString)}}"""
    )
    System.out.flush()
    sys.exit(if ok then 0 else 1)

  /** *.lz4 and *.lz4.tmp, sorted by the bytes of their names. */
  def recordFiles(dir: Path): Seq[Path] =
    val names = Using.resource(Files.list(dir))(_.iterator.asScala.toList)
      .filter(p => Files.isRegularFile(p))
      .filter(p => { val n = p.getFileName.toString; n.endsWith(".lz4") || n.endsWith(".lz4.tmp") })
    names.sortWith((a, b) => java.util.Arrays.compareUnsigned(bytes(a), bytes(b)) < 0)

  private def bytes(p: Path): Array[Byte] = p.getFileName.toString.getBytes(UTF_8)

  /** One file: a final file must decode to its end; a .tmp file may stop inside a frame, a block or
    * a record (the complete records before count).
    */
  def readFile(path: Path, stats: Stats): Unit =
    val name = path.getFileName.toString
    val tmp = name.endsWith(".tmp")
    if tmp then stats.tmpFiles += 1 else stats.files += 1
    stats.fileBytes += Files.size(path)
    if Files.size(path) == 0 then return // no frame at all: no records
    val pending = new Pending
    val outcome = Using.resource(new BufferedInputStream(new FileInputStream(path.toFile), 1 << 16)) { file =>
      Lz4Frames.decode(
        file,
        (buf, off, len) =>
          pending.append(buf, off, len)
          records(pending, name, stats)
      )
    }
    outcome match
      case Lz4Frames.Outcome.Complete =>
        if pending.length > 0 then
          if tmp then stats.truncatedTmp += 1
          else throw new FormatError(s"$name: file ends inside a record (${pending.length} bytes left)")
      case Lz4Frames.Outcome.Truncated(what) =>
        if tmp then stats.truncatedTmp += 1
        else throw new FormatError(s"$name: file ends inside a LZ4 frame ($what)")
      case Lz4Frames.Outcome.Corrupt(why) =>
        if tmp then stats.truncatedTmp += 1 // a crash can leave garbage at the end of a .tmp
        else throw new FormatError(s"$name: LZ4: $why")

  /** Decoded bytes not yet consumed as records. */
  private final class Pending:
    var buf = new Array[Byte](1 << 17)
    var start = 0
    var end = 0
    def length: Int = end - start
    def append(src: Array[Byte], off: Int, n: Int): Unit =
      if end + n > buf.length then
        System.arraycopy(buf, start, buf, 0, end - start)
        end -= start
        start = 0
        if end + n > buf.length then buf = java.util.Arrays.copyOf(buf, math.max(buf.length * 2, end + n))
      System.arraycopy(src, off, buf, end, n)
      end += n

  /** Consumes the complete records at the head of `p`. */
  private def records(p: Pending, name: String, stats: Stats): Unit =
    var more = true
    while more && p.length >= 8 do
      val size = ByteBuffer.wrap(p.buf, p.start, 8).order(ByteOrder.LITTLE_ENDIAN).getLong
      if size < 0 || size > MaxRecord then throw new FormatError(s"$name: record length ${java.lang.Long.toUnsignedString(size)} is not plausible")
      if p.length - 8 < size then more = false
      else
        val rec = ByteBuffer.wrap(p.buf, p.start + 8, size.toInt).slice().order(ByteOrder.LITTLE_ENDIAN)
        stats.streamBytes += 8 + size
        val fields =
          try decode(rec)
          catch case e: FormatError => throw new FormatError(s"$name: record ${stats.records + 1}: ${e.getMessage}")
        val d = stats.digest
        val len = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN)
        fields.foreach { f =>
          len.putInt(0, if f == null then 0 else f.remaining)
          d.update(len.array)
          if f != null then d.update(f)
        }
        stats.records += 1
        p.start += 8 + size.toInt

  /** The five fields (id, method, uri, headers, body) of one buffer, null where left out; every
    * offset checked against the buffer before the generated accessors use it.
    */
  def decode(bb: ByteBuffer): Array[ByteBuffer] =
    val n = bb.limit
    def u32(at: Int, what: String): Long =
      if at < 0 || at + 4 > n then throw new FormatError(s"$what out of the buffer")
      bb.getInt(at) & 0xffffffffL
    def u16(at: Int, what: String): Int =
      if at < 0 || at + 2 > n then throw new FormatError(s"$what out of the buffer")
      bb.getShort(at) & 0xffff
    if n < 8 then throw new FormatError(s"buffer of $n bytes")
    val root = u32(0, "root offset")
    if root + 4 > n then throw new FormatError("root offset out of the buffer")
    val table = root.toInt
    val vtable = table.toLong - bb.getInt(table) // soffset: signed
    if vtable < 0 || vtable + 4 > n then throw new FormatError("vtable out of the buffer")
    val vt = vtable.toInt
    val vtLen = u16(vt, "vtable length")
    val objLen = u16(vt + 2, "table length")
    if vtLen < 4 || vt + vtLen > n || table.toLong + objLen > n then throw new FormatError("vtable or table runs past the buffer")
    for i <- 0 until 5 do
      val slot = 4 + 2 * i
      val o = if slot + 2 <= vtLen then u16(vt + slot, "field offset") else 0
      if o != 0 then
        if o + 4 > objLen then throw new FormatError(s"field $i outside its table")
        val at = table + o
        val vec = at.toLong + u32(at, s"field $i") // the vector's length word
        if vec + 4 > n then throw new FormatError(s"field $i runs past the buffer")
        val len = u32(vec.toInt, s"field $i length")
        val terminator = if i < 4 then 1 else 0 // strings end with a 0 byte
        if vec + 4 + len + terminator > n then throw new FormatError(s"field $i runs past the buffer")
    // Every offset is in bounds: the generated accessors cannot read outside the buffer.
    val r = Request.getRootAsRequest(bb)
    val fields = Array(r.idAsByteBuffer, r.methodAsByteBuffer, r.uriAsByteBuffer, r.headersAsByteBuffer, r.bodyAsByteBuffer)
    if fields(0) == null || fields(0).remaining == 0 then throw new FormatError("record without an id")
    fields

  private def jsonString(s: String): String =
    val b = new StringBuilder("\"")
    s.foreach {
      case '"'            => b.append("\\\"")
      case '\\'           => b.append("\\\\")
      case '\n'           => b.append("\\n")
      case '\r'           => b.append("\\r")
      case '\t'           => b.append("\\t")
      case c if c < 0x20 => b.append(f"\\u${c.toInt}%04x")
      case c              => b.append(c)
    }
    b.append('"').toString
