package langbench.pipeline

import java.util.concurrent.ConcurrentLinkedQueue
import java.util.concurrent.atomic.AtomicInteger

/** Something that waits for room in a [[Budget]]: an HTTP connection that stopped reading, an
  * inbound stream that stopped requesting. `wake` may be called from any thread; the waiter goes
  * back to its own event loop, takes what it needs, and calls [[Budget.pass]] when it needs nothing
  * any more (so that a wake-up is never lost).
  */
trait Parked:
  def wake(): Unit

/** The node's MAX_INFLIGHT: one unit per operation held (and, on B and C, per message requested from
  * a stream and not yet received, so that what arrives always fits). Lock-free: a CAS on the hot
  * path, a queue of waiters only at the limit.
  */
final class Budget(val max: Int):
  private val used = new AtomicInteger
  private val waiters = new ConcurrentLinkedQueue[Parked]
  @volatile private var closed = false

  def inUse: Int = used.get

  def tryAcquire(): Boolean =
    var result = false
    var done = false
    while !done do
      val u = used.get
      if closed || u >= max then done = true
      else if used.compareAndSet(u, u + 1) then
        result = true
        done = true
    result

  /** Takes a unit whatever the limit (for a message that arrived unrequested). */
  def force(): Unit =
    used.incrementAndGet()
    ()

  /** Gives back `n` units and wakes up to `n` waiters. */
  def release(n: Int): Unit =
    used.addAndGet(-n)
    var k = n
    while k > 0 do
      val p = waiters.poll()
      if p == null then k = 0
      else
        p.wake()
        k -= 1

  /** Queues a waiter; the caller tries [[tryAcquire]] once more afterwards (a release may have found the queue empty). */
  def park(p: Parked): Unit = waiters.add(p)

  /** A woken waiter that needs nothing hands its wake-up on. */
  def pass(): Unit =
    if !closed && used.get < max then
      val p = waiters.poll()
      if p != null then p.wake()

  /** Shutdown: nothing new is taken from now on. */
  def close(): Unit = closed = true
