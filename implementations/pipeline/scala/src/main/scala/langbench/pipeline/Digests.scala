package langbench.pipeline

import com.google.protobuf.ByteString
import io.grpc.netty.shaded.io.netty.buffer.ByteBuf

import java.nio.ByteBuffer
import java.nio.charset.StandardCharsets
import java.security.MessageDigest

/** The transform T: SHA-256 applied `rounds` times. One instance per event-loop thread (or per
  * writer), reused for every operation: a MessageDigest is not thread-safe and costs an allocation
  * and a provider lookup to create.
  */
final class Hasher(rounds: Int):
  private val md = MessageDigest.getInstance("SHA-256")
  private val scratch = new Array[Byte](64)

  /** dA = T(id || "\n" || payload). */
  def entry(id: String, payload: Array[Byte]): Array[Byte] =
    md.update(id.getBytes(StandardCharsets.UTF_8))
    md.update(Hasher.Newline)
    md.update(payload)
    finish()

  /** The next node's digest: T(previous digest). */
  def chain(input: ByteString): Array[Byte] =
    val n = input.size
    if n <= scratch.length then
      input.copyTo(scratch, 0)
      md.update(scratch, 0, n)
    else md.update(input.asReadOnlyByteBuffer())
    finish()

  /** Round 1 from what was fed in, then rounds 2..n over the 32-byte digest, in place. */
  private def finish(): Array[Byte] =
    val out = new Array[Byte](32)
    md.digest(out, 0, 32)
    var k = 1
    while k < rounds do
      md.update(out, 0, 32)
      md.digest(out, 0, 32)
      k += 1
    out

object Hasher:
  private val Newline: Byte = 10

/** Lower-case hex, written straight into the output buffers. */
object Hex:
  private val Digits: Array[Byte] = "0123456789abcdef".getBytes(StandardCharsets.US_ASCII)

  def write(d: ByteString, out: ByteBuf): Unit =
    var i = 0
    val n = d.size
    while i < n do
      val b = d.byteAt(i) & 0xff
      out.writeByte(Digits(b >>> 4))
      out.writeByte(Digits(b & 15))
      i += 1

  def put(d: Array[Byte], out: ByteBuffer): Unit =
    var i = 0
    while i < d.length do
      val b = d(i) & 0xff
      out.put(Digits(b >>> 4))
      out.put(Digits(b & 15))
      i += 1

  /** The value of one hex digit (either case), -1 for anything else. */
  def nibble(c: Byte): Int =
    if c >= '0' && c <= '9' then c - '0'
    else if c >= 'a' && c <= 'f' then c - 'a' + 10
    else if c >= 'A' && c <= 'F' then c - 'A' + 10
    else -1

/** Operation ids: 1 to 128 characters of A-Z a-z 0-9 . _ : - */
object Ids:
  val MaxLength = 128

  def valid(s: String): Boolean =
    val n = s.length
    var ok = n > 0 && n <= MaxLength
    var i = 0
    while ok && i < n do
      val c = s.charAt(i)
      ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-'
      i += 1
    ok
