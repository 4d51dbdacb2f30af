package langbench.pipeline

import io.grpc.{ManagedChannel, Status}
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder
import io.grpc.netty.shaded.io.netty.channel.{Channel, EventLoop}
import io.grpc.stub.{ClientCallStreamObserver, ClientResponseObserver}
import langbench.pipeline.proto.{Ack, Op, StageGrpc}

import java.util.concurrent.TimeUnit
import scala.util.control.NonFatal

/** Whoever waits for an operation's acknowledgement: an HTTP request (node a), an inbound stream (node b). */
trait Waiter:
  def acked(ack: Ack): Unit

/** An operation held by a [[Lane]] until the next node acknowledges it. Copies of the same id that
  * arrive meanwhile wait on it (the first commit of an id wins, whatever payload a copy carries).
  */
final class Entry(val id: String, val op: Op, first: Waiter):
  private var more: java.util.ArrayList[Waiter] = null
  var done = false

  def add(w: Waiter): Unit =
    if more == null then more = new java.util.ArrayList[Waiter](2)
    more.add(w)

  def complete(ack: Ack): Unit =
    done = true
    first.acked(ack)
    if more != null then
      var i = 0
      while i < more.size do
        more.get(i).acked(ack)
        i += 1

/** The way down from one event loop: a gRPC channel to the next node bound to this loop (its
  * transport, its callbacks and our code all run on the loop's thread: no lock, no hand-off), one
  * long-lived Forward stream at a time, and every operation kept until it is acknowledged.
  *
  * Sending follows the stream's flow control (isReady / onReady): what the stream cannot take waits
  * in `unsent`, bounded by the node's MAX_INFLIGHT. When the stream fails or ends, a new one is
  * opened (wait-for-ready, the channel's connect back-off reset every 50 ms, so a restarted node is
  * found within ~50 ms) and every unacknowledged operation is sent again; the next node's
  * de-duplication makes that safe.
  */
final class Lane(val index: Int, val loop: EventLoop, target: String, channelType: Class[? <: Channel], rounds: Int, peer: String):
  val hasher = new Hasher(rounds)

  private val channel: ManagedChannel =
    NettyChannelBuilder
      .forTarget(target)
      .eventLoopGroup(loop)
      .channelType(channelType)
      .usePlaintext()
      .directExecutor()
      .disableRetry() // we resend ourselves; grpc's retry buffer would only copy every message
      .build()
  private val stub = StageGrpc.newStub(channel).withWaitForReady()

  private val pending = new java.util.LinkedHashMap[String, Entry](4096)
  private val unsent = new java.util.ArrayDeque[Entry](1024)
  private var stream: Attempt = null
  private var attempts = 0L
  @volatile private var stopped = false
  private val tickTask: Runnable = () => tick()

  def start(): Unit =
    loop.execute { () =>
      attempt()
      loop.scheduleAtFixedRate(tickTask, Lane.TickMs, Lane.TickMs, TimeUnit.MILLISECONDS)
      ()
    }

  /** On the loop: keeps `op` until acknowledged and sends it as soon as the stream has room; a copy
    * of an id already held only waits for that one's acknowledgement.
    */
  def submit(id: String, op: Op, w: Waiter): Unit =
    val known = pending.get(id)
    if known != null then known.add(w)
    else
      val e = new Entry(id, op, w)
      pending.put(id, e)
      if stream != null then
        unsent.add(e)
        drain()

  def stop(): Unit =
    stopped = true
    channel.shutdownNow()
    ()

  private def drain(): Unit =
    val s = stream
    if s != null && s.call != null then
      val call = s.call
      try
        while !unsent.isEmpty && call.isReady do
          val e = unsent.poll()
          if !e.done then call.onNext(e.op)
      catch
        case NonFatal(t) =>
          try call.cancel("send failed", t)
          catch case NonFatal(_) => ()
          ended(s, Status.fromThrowable(t))

  private def attempt(): Unit =
    attempts += 1
    val a = new Attempt
    stream = a
    unsent.clear()
    pending.values.forEach(e => unsent.add(e))
    stub.forward(a)
    drain()

  private def tick(): Unit =
    if !stopped then
      if stream == null then attempt()
      else
        if !stream.established then channel.resetConnectBackoff()
        drain()

  private def ready(a: Attempt): Unit =
    if a eq stream then
      if !a.established then
        a.established = true
        if attempts > 1 then Log.info(s"lane $index: stream to $peer up, ${pending.size} operations (re)sent")
      drain()

  private def acked(a: Attempt, ack: Ack): Unit =
    a.established = true
    val e = pending.remove(ack.getId)
    if e != null then e.complete(ack) // else: an id no longer waited for (already acknowledged): dropped

  private def ended(a: Attempt, status: Status): Unit =
    if a eq stream then
      stream = null // the next tick opens a new stream and sends everything held again
      unsent.clear()
      if !stopped then
        Log.warn(s"lane $index: stream to $peer ended (${status.getCode}${Option(status.getDescription).fold("")(d => s": $d")}), ${pending.size} operations held")

  /** One Forward call. Its callbacks normally arrive on the loop (direct executor, the channel's own
    * transport); those that come from elsewhere (a call still waiting for a connection) are moved there.
    */
  private final class Attempt extends ClientResponseObserver[Op, Ack]:
    @volatile var call: ClientCallStreamObserver[Op] = null
    var established = false
    private val readyTask: Runnable = () => ready(this)

    override def beforeStart(rs: ClientCallStreamObserver[Op]): Unit =
      call = rs
      rs.setOnReadyHandler(() => if loop.inEventLoop() then ready(this) else loop.execute(readyTask))

    override def onNext(ack: Ack): Unit =
      if loop.inEventLoop() then acked(this, ack) else loop.execute(() => acked(this, ack))

    override def onError(t: Throwable): Unit =
      val status = Status.fromThrowable(t)
      if loop.inEventLoop() then ended(this, status) else loop.execute(() => ended(this, status))

    override def onCompleted(): Unit =
      if loop.inEventLoop() then ended(this, Status.OK) else loop.execute(() => ended(this, Status.OK))

object Lane:
  private val TickMs = 50L
