package blackhole

import com.google.flatbuffers.FlatBufferBuilder
import fbr.Request
import io.netty.buffer.ByteBuf
import io.netty.handler.codec.http.{HttpHeaders, HttpRequest}
import io.netty.util.concurrent.FastThreadLocal

import java.nio.ByteBuffer
import java.util.concurrent.atomic.AtomicLong

/** Turns one received request into one record of the stream: an 8-byte little-endian length and a
  * finished FlatBuffers `fbr.Request` (no size prefix, no file identifier), in one array.
  *
  * One encoder per event-loop thread (its builder and scratch space are reused request after
  * request). Netty hands over the request line and the headers as ISO-8859-1 text (one char per
  * byte received); each text field is stored as the bytes received when they are valid UTF-8, and
  * else as those bytes read as ISO-8859-1 and encoded in UTF-8 (FlatBuffers strings are UTF-8).
  */
final class Encoder:
  private val fbb = new FlatBufferBuilder(16 * 1024)
  private var raw = new Array[Byte](8 * 1024) // the field's bytes as received
  private var wide = new Array[Byte](16 * 1024) // ISO-8859-1 -> UTF-8 when they are not UTF-8

  /** The record of `req` with `body` (not released here), its id given or generated. */
  def encode(req: HttpRequest, body: ByteBuf, id: CharSequence): Array[Byte] =
    fbb.clear()
    // Vectors and strings first (FlatBuffers builds back to front), then the table.
    val bodyOff =
      val n = if body == null then 0 else body.readableBytes
      if n == 0 then 0 // the field left out: an empty body
      else
        val dst = fbb.createUnintializedVector(1, n, 1)
        body.getBytes(body.readerIndex, dst)
        fbb.endVector()
    val headersOff = string(headerBlock(req.headers))
    val uriOff = string(chars(req.uri))
    val methodOff = string(chars(req.method.name))
    val idOff = string(chars(id))
    val root = Request.createRequest(fbb, idOff, methodOff, uriOff, headersOff, bodyOff)
    fbb.finish(root)

    val buf = fbb.dataBuffer // position .. limit: the finished buffer
    val size = buf.remaining
    val out = new Array[Byte](8 + size)
    var i = 0
    var len = size.toLong
    while i < 8 do
      out(i) = len.toByte
      len >>>= 8
      i += 1
    buf.duplicate.get(out, 8, size)
    out

  /** "Name: value\r\n" per header line, in the order received, into `raw`; returns its length. */
  private def headerBlock(headers: HttpHeaders): Int =
    var n = 0
    val it = headers.iteratorCharSequence()
    while it.hasNext do
      val e = it.next()
      val name = e.getKey
      val value = e.getValue
      n = put(name, n)
      n = ensure(n, 2); raw(n) = ':'; raw(n + 1) = ' '; n += 2
      n = put(value, n)
      n = ensure(n, 2); raw(n) = '\r'; raw(n + 1) = '\n'; n += 2
    n

  private def chars(cs: CharSequence): Int = put(cs, 0)

  /** Appends the chars of `cs` (each one byte received) to `raw` at `at`; returns the new length. */
  private def put(cs: CharSequence, at: Int): Int =
    val len = cs.length
    val n = ensure(at, len)
    var i = 0
    while i < len do
      raw(n + i) = cs.charAt(i).toByte
      i += 1
    n + len

  /** Makes room for `more` bytes after `at` in `raw`; returns `at`. */
  private def ensure(at: Int, more: Int): Int =
    if at + more > raw.length then raw = java.util.Arrays.copyOf(raw, math.max(raw.length * 2, at + more))
    at

  /** The first `n` bytes of `raw` as a FlatBuffers string. */
  private def string(n: Int): Int =
    if Text.isUtf8(raw, 0, n) then fbb.createString(ByteBuffer.wrap(raw, 0, n))
    else
      if wide.length < 2 * n then wide = new Array[Byte](2 * n)
      val m = Text.latin1ToUtf8(raw, n, wide)
      fbb.createString(ByteBuffer.wrap(wide, 0, m))

object Encoder:
  private val local = new FastThreadLocal[Encoder]:
    override def initialValue(): Encoder = new Encoder

  /** This thread's encoder. */
  def get: Encoder = local.get

/** Ids for requests without an X-Request-ID: the server's start time (ms) and pid, and a counter;
  * unique across the server's life and its restarts.
  */
final class IdSource(startMillis: Long, pid: Long):
  private val prefix = s"bh-$startMillis-$pid-"
  private val counter = new AtomicLong

  def next(): String = prefix + counter.incrementAndGet()

object Text:
  /** Whether `a[off, off+len)` is well-formed UTF-8 (no overlong forms, no surrogates, <= U+10FFFF). */
  def isUtf8(a: Array[Byte], off: Int, len: Int): Boolean =
    var i = off
    val end = off + len
    while i < end && a(i) >= 0 do i += 1 // ASCII run: the common case
    while i < end do
      val b = a(i) & 0xff
      if b < 0x80 then i += 1
      else if b >= 0xc2 && b <= 0xdf then
        if i + 1 >= end || !cont(a(i + 1)) then return false
        i += 2
      else if b >= 0xe0 && b <= 0xef then
        if i + 2 >= end || !cont(a(i + 1)) || !cont(a(i + 2)) then return false
        val b1 = a(i + 1) & 0xff
        if b == 0xe0 && b1 < 0xa0 then return false // overlong
        if b == 0xed && b1 >= 0xa0 then return false // surrogate
        i += 3
      else if b >= 0xf0 && b <= 0xf4 then
        if i + 3 >= end || !cont(a(i + 1)) || !cont(a(i + 2)) || !cont(a(i + 3)) then return false
        val b1 = a(i + 1) & 0xff
        if b == 0xf0 && b1 < 0x90 then return false // overlong
        if b == 0xf4 && b1 >= 0x90 then return false // above U+10FFFF
        i += 4
      else return false
    true

  private inline def cont(b: Byte): Boolean = (b & 0xc0) == 0x80

  /** `src[0, n)` read as ISO-8859-1, written to `dst` as UTF-8 (room for 2n); returns the length. */
  def latin1ToUtf8(src: Array[Byte], n: Int, dst: Array[Byte]): Int =
    var i = 0
    var j = 0
    while i < n do
      val c = src(i) & 0xff
      if c < 0x80 then
        dst(j) = c.toByte
        j += 1
      else
        dst(j) = (0xc0 | (c >> 6)).toByte
        dst(j + 1) = (0x80 | (c & 0x3f)).toByte
        j += 2
      i += 1
    j
