package blackhole

import net.jpountz.lz4.{LZ4Compressor, LZ4Factory, LZ4FrameOutputStream}
import net.jpountz.lz4.LZ4FrameOutputStream.{BLOCKSIZE, FLG}
import net.jpountz.xxhash.{XXHash32, XXHashFactory}

import java.io.FileOutputStream
import java.nio.file.{Files, Path, StandardCopyOption}
import java.util.ArrayList
import java.util.concurrent.{ArrayBlockingQueue, ConcurrentLinkedQueue, TimeUnit}
import java.util.concurrent.atomic.AtomicLong
import java.util.concurrent.locks.LockSupport

/** Something waiting for room in a recorder's queue; `wake` is called (from the writer thread)
  * once room was freed, and must not block.
  */
trait Waiter:
  def wake(): Unit

/** One writer: a bounded queue of finished records (bounded in records and in bytes) and the
  * thread that writes them, in queue order, to its own sequence of LZ4-framed files.
  *
  * Producers (event loops) never block: `tryOffer` fails when the queue is full; the producer then
  * registers a `Waiter`, re-tries once (so that no wake-up is lost), and is woken when the writer
  * has taken records out of the queue.
  *
  * While records arrive, the writer naps 1 ms between batches instead of being woken per record
  * (the answer does not wait for the write, so this adds no latency); after 20 ms without a record
  * it blocks on the queue and the next offer wakes it.
  *
  * Files: NAME.lz4.tmp, renamed NAME.lz4 when closed: once it holds `rotateBytes` bytes of record
  * stream, when it has been open `rotateNanos` (checked at least every 250 ms), and at shutdown.
  * NAME = `<prefix>-<writer>-<sequence>`. A file is opened with its first record. The compressor
  * and the file are flushed at most `FlushNanos` after a record was written.
  */
final class Recorder(
    index: Int,
    dir: Path,
    prefix: String,
    rotateBytes: Long,
    rotateNanos: Long,
    maxRecords: Int,
    maxBytes: Long,
    compressor: LZ4Compressor,
    hash: XXHash32
):
  import Recorder.*

  private val queue = new ArrayBlockingQueue[Array[Byte]](maxRecords)
  private val queuedBytes = new AtomicLong
  private val waiters = new ConcurrentLinkedQueue[Waiter]
  private val thread = new Thread(() => run(), s"recorder-$index")

  // Writer-thread state.
  private var seq = 0
  private var out: LZ4FrameOutputStream = null
  private var tmpPath: Path = null
  private var finalPath: Path = null
  private var openedAt = 0L
  private var lastFlush = 0L
  private var dirty = false
  private var streamBytes = 0L

  @volatile private var written = 0L // records written (for the stop log line)
  @volatile private var files = 0
  private val waits = new AtomicLong // hand-offs that found the queue full and waited

  def start(): Unit = thread.start()

  /** Queues `rec` if there is room (records and bytes); never blocks. */
  def tryOffer(rec: Array[Byte]): Boolean =
    val n = rec.length
    var reserved = false
    var full = false
    while !reserved && !full do
      val cur = queuedBytes.get
      if cur > 0 && cur + n > maxBytes then full = true // a record larger than the bound passes alone
      else reserved = queuedBytes.compareAndSet(cur, cur + n)
    if full then false
    else if queue.offer(rec) then true
    else
      queuedBytes.addAndGet(-n)
      false

  /** `w` is woken once room was freed (the caller re-tries after registering). */
  def await(w: Waiter): Unit =
    waits.incrementAndGet()
    waiters.add(w)

  /** Writes what is queued, closes and renames the open file; waits at most `timeoutMs`. */
  def stop(timeoutMs: Long): Boolean =
    queue.put(Stop)
    thread.join(timeoutMs)
    !thread.isAlive

  def stats: String = s"writer $index: $written records, $files files, ${waits.get} hand-offs waited for room"

  private def run(): Unit =
    val batch = new ArrayList[Array[Byte]](BatchMax)
    try
      var stopping = false
      var lastRecord = System.nanoTime() - NapWindowNanos - 1 // idle at start
      while !stopping do
        var first = queue.poll()
        if first == null then
          val now = System.nanoTime()
          if now - lastRecord < NapWindowNanos then
            // Records came in lately: nap and take what arrived meanwhile as one batch. Producers
            // do not wake a napping writer (no futex wake-up, no context switch per request).
            LockSupport.parkNanos(NapNanos)
            first = queue.poll()
          else first = queue.poll(pollNanos(now), TimeUnit.NANOSECONDS) // idle: block (offers signal)
        if first != null then
          lastRecord = System.nanoTime()
          batch.add(first)
          queue.drainTo(batch, BatchMax - 1)
          // The records are out of the queue: give their room back before writing them.
          var freed = 0L
          var i = 0
          while i < batch.size do
            freed += batch.get(i).length
            i += 1
          queuedBytes.addAndGet(-freed)
          wakeWaiters()
          i = 0
          while i < batch.size do
            val rec = batch.get(i)
            if rec eq Stop then stopping = true else write(rec)
            i += 1
          batch.clear()
        housekeeping(System.nanoTime())
      // Stop was queued after the last producer stopped; anything behind it is written too.
      var rec = queue.poll()
      while rec != null do
        if rec ne Stop then write(rec)
        rec = queue.poll()
      closeFile()
    catch
      case e: Throwable =>
        // A write error is fatal (the contract): the server must not answer 200 to requests it
        // cannot record. Exit at once, non-zero.
        Log.error(s"recorder $index: cannot write ${if tmpPath == null then dir else tmpPath}", e)
        System.err.flush()
        Runtime.getRuntime.halt(1)

  private def wakeWaiters(): Unit =
    var w = waiters.poll()
    while w != null do
      try w.wake()
      catch case e: Exception => Log.warn(s"recorder $index: wake-up failed: $e")
      w = waiters.poll()

  private def write(rec: Array[Byte]): Unit =
    if out == null then openFile()
    out.write(rec, 0, rec.length)
    written += 1
    streamBytes += rec.length
    dirty = true
    if streamBytes >= rotateBytes then closeFile()

  /** Age rotation and the periodic flush. */
  private def housekeeping(now: Long): Unit =
    if out != null then
      if now - openedAt >= rotateNanos then closeFile()
      else if dirty && now - lastFlush >= FlushNanos then
        out.flush() // the partial block, compressed, goes to the file
        dirty = false
        lastFlush = now

  /** How long the writer may wait for a record before its housekeeping is due. */
  private def pollNanos(now: Long): Long =
    if out == null then IdleNanos
    else
      val rotateIn = openedAt + rotateNanos - now
      val flushIn = if dirty then lastFlush + FlushNanos - now else IdleNanos
      math.max(1000000L, math.min(math.min(rotateIn, flushIn), CheckNanos))

  private def openFile(): Unit =
    seq += 1
    val name = f"$prefix-$index%02d-$seq%08d.lz4"
    finalPath = dir.resolve(name)
    tmpPath = dir.resolve(name + ".tmp")
    val file = new FileOutputStream(tmpPath.toFile)
    out = new LZ4FrameOutputStream(file, BlockSize, -1L, compressor, hash, FLG.Bits.BLOCK_INDEPENDENCE, FLG.Bits.CONTENT_CHECKSUM)
    openedAt = System.nanoTime()
    lastFlush = openedAt
    streamBytes = 0
    dirty = false

  private def closeFile(): Unit =
    if out != null then
      out.close() // last block, end mark, content checksum, then the file
      Files.move(tmpPath, finalPath, StandardCopyOption.ATOMIC_MOVE)
      files += 1
      out = null
      tmpPath = null

object Recorder:
  /** Frame settings (declared in langbench.toml): 64 KiB independent blocks, content checksum. */
  val BlockSize: BLOCKSIZE = BLOCKSIZE.SIZE_64KB
  val FlushNanos: Long = 500L * 1000000 // at most this long between a record and its flush
  private val CheckNanos = 250L * 1000000 // housekeeping at least this often while a file is open
  private val IdleNanos = 1000L * 1000000
  private val BatchMax = 1024
  private val NapNanos = 1000000L // the writer's nap between batches while records arrive
  private val NapWindowNanos = 20L * 1000000 // without a record for this long, it blocks instead
  private val Stop = new Array[Byte](0)

  /** The LZ4 block compressor: the JNI binding of the reference C library when it loads, else the
    * pure-Java (safe) one. Compression only ever reads our own records.
    */
  def codec(): (LZ4Compressor, XXHash32, String) =
    try
      val f = LZ4Factory.nativeInstance()
      (f.fastCompressor(), XXHashFactory.nativeInstance().hash32(), "JNI (liblz4)")
    catch
      case e: Throwable =>
        Log.warn(s"LZ4 JNI binding not available ($e): pure-Java LZ4")
        (LZ4Factory.safeInstance().fastCompressor(), XXHashFactory.safeInstance().hash32(), "pure Java (safe)")
