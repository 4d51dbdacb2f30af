package langbench.pipeline

import com.google.protobuf.UnsafeByteOperations
import langbench.pipeline.proto.Ack

import java.io.IOException
import java.nio.ByteBuffer
import java.nio.channels.FileChannel
import java.nio.charset.StandardCharsets
import java.nio.file.{Files, Path, StandardOpenOption}
import java.util.concurrent.{LinkedBlockingQueue, TimeUnit}

/** An operation on its way into the ledger: its id, dC, and the stream to acknowledge it on. */
final class Commit(val id: String, val digest: Array[Byte], val from: Upstream)

/** C's append-only ledger, `{id} {dC hex}\n` per committed operation, with group commit.
  *
  * One writer thread owns the file and the set of committed ids (rebuilt from the file at start, a
  * torn last line cut off first). It takes everything queued (up to 8,192 operations), appends the
  * lines of the ids not yet committed in one buffer, writes it, calls force(false) (fdatasync)
  * once, and only then hands the acknowledgements of the whole batch to the streams' event loops,
  * one task per stream and batch. An id already committed is acknowledged with its committed digest
  * and duplicate = true, nothing written; a copy inside the same batch is acknowledged after that
  * batch's sync. Operations that arrive during a sync form the next batch.
  */
final class Ledger(path: Path):
  import Ledger.*

  private val committed = new java.util.HashMap[String, Array[Byte]](1 << 16)
  private val queue = new LinkedBlockingQueue[Commit]()
  private var file: FileChannel = scala.compiletime.uninitialized
  @volatile private var stopping = false
  private val writer = new Thread(() => run(), "ledger-writer")
  @volatile private var lines = 0L
  @volatile private var syncs = 0L

  /** Reads the ledger (cutting a torn tail), returns the number of committed ids, starts the writer. */
  def open(): Int =
    val dir = path.toAbsolutePath.getParent
    if dir != null then Files.createDirectories(dir)
    val existed = Files.exists(path)
    file = FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.READ, StandardOpenOption.WRITE)
    if !existed && dir != null then syncDirectory(dir)
    val end = recover()
    val size = file.size
    if end < size then
      Log.warn(s"ledger: cutting a torn last line (${size - end} bytes without a newline)")
      file.truncate(end)
      file.force(true)
    file.position(end)
    writer.start()
    committed.size

  def submit(c: Commit): Unit = queue.add(c)

  /** After the streams ended: writes what is queued, closes the file. */
  def close(timeoutMs: Long): Unit =
    stopping = true
    writer.join(timeoutMs)
    if writer.isAlive then Log.warn("ledger: the writer did not finish in time")
    else file.close()
    Log.info(s"ledger: $lines lines written with $syncs syncs since start")

  private def run(): Unit =
    val batch = new java.util.ArrayList[Commit](MaxBatch)
    val groups = new java.util.IdentityHashMap[Upstream, java.util.ArrayList[Ack]]()
    val out = ByteBuffer.allocateDirect(BufferBytes)
    try
      while !stopping || !queue.isEmpty do
        val first = queue.poll(20, TimeUnit.MILLISECONDS)
        if first != null then
          batch.add(first)
          queue.drainTo(batch, MaxBatch - 1)
          var fresh = 0
          var i = 0
          while i < batch.size do
            val c = batch.get(i)
            val known = committed.get(c.id)
            val ack =
              if known != null then mkAck(c.id, known, duplicate = true)
              else
                committed.put(c.id, c.digest)
                val id = c.id.getBytes(StandardCharsets.UTF_8)
                if out.remaining < id.length + 66 then writeOut(out)
                out.put(id).put(Space)
                Hex.put(c.digest, out)
                out.put(Newline)
                fresh += 1
                mkAck(c.id, c.digest, duplicate = false)
            var acks = groups.get(c.from)
            if acks == null then
              acks = new java.util.ArrayList[Ack](batch.size)
              groups.put(c.from, acks)
            acks.add(ack)
            i += 1
          if fresh > 0 then
            writeOut(out)
            file.force(false)
            lines += fresh
            syncs += 1
          groups.forEach((up, acks) => up.deliver(acks))
          groups.clear()
          batch.clear()
    catch
      case e: Throwable =>
        // Nothing of this batch was acknowledged; without a working ledger C cannot go on.
        Log.error("ledger: write failed, exiting", e)
        Runtime.getRuntime.halt(1)

  private def writeOut(out: ByteBuffer): Unit =
    out.flip()
    while out.hasRemaining do file.write(out)
    out.clear()
    ()

  private def mkAck(id: String, digest: Array[Byte], duplicate: Boolean): Ack =
    Ack.newBuilder().setId(id).setDigest(UnsafeByteOperations.unsafeWrap(digest)).setDuplicate(duplicate).build()

  /** Parses every complete line into `committed` (the first line of an id wins); returns the offset
    * just past the last newline.
    */
  private def recover(): Long =
    val buf = ByteBuffer.allocate(1 << 16)
    val arr = buf.array()
    val line = new Array[Byte](MaxLine)
    var len = 0
    var overflow = false
    var pos = 0L // file offset of arr(0)
    var end = 0L
    var bad = 0
    file.position(0)
    var n = file.read(buf)
    while n >= 0 do
      val lim = buf.position()
      var i = 0
      while i < lim do
        val b = arr(i)
        if b == Newline then
          if overflow || !parse(line, len) then bad += 1
          end = pos + i + 1
          len = 0
          overflow = false
        else if len < line.length then
          line(len) = b
          len += 1
        else overflow = true
        i += 1
      pos += lim
      buf.clear()
      n = file.read(buf)
    if bad > 0 then Log.warn(s"ledger: $bad malformed lines ignored")
    end

  private def parse(line: Array[Byte], len: Int): Boolean =
    var sp = 0
    while sp < len && line(sp) != Space do sp += 1
    if sp == 0 || len - sp - 1 != 64 then false
    else
      val d = new Array[Byte](32)
      var ok = true
      var k = 0
      while ok && k < 32 do
        val hi = Hex.nibble(line(sp + 1 + 2 * k))
        val lo = Hex.nibble(line(sp + 2 + 2 * k))
        if hi < 0 || lo < 0 then ok = false
        else d(k) = ((hi << 4) | lo).toByte
        k += 1
      if ok then committed.putIfAbsent(new String(line, 0, sp, StandardCharsets.UTF_8), d)
      ok

  private def syncDirectory(dir: Path): Unit =
    try
      val ch = FileChannel.open(dir, StandardOpenOption.READ)
      try ch.force(true)
      finally ch.close()
    catch case _: IOException => ()

object Ledger:
  private val MaxBatch = 8192
  private val BufferBytes = 1 << 20
  private val MaxLine = 1024
  private val Space: Byte = 32
  private val Newline: Byte = 10
