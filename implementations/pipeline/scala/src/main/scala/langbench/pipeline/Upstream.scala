package langbench.pipeline

import io.grpc.{ForwardingServerCall, Metadata, ServerCall, ServerCallHandler, ServerInterceptor}
import io.grpc.netty.shaded.io.netty.channel.EventLoop
import io.grpc.stub.{ServerCallStreamObserver, StreamObserver}
import langbench.pipeline.proto.{Ack, Op, StageGrpc}

import java.util.concurrent.RejectedExecutionException
import java.util.concurrent.atomic.AtomicInteger
import scala.util.control.NonFatal

/** What B and C share: the budget, the count of operations held, the open inbound streams, and
  * what to do with each operation.
  */
trait Stage:
  def budget: Budget
  def held: AtomicInteger
  def streams: java.util.Set[Upstream]
  /** On `from.loop`: transform the operation and pass it on; `from.acked` (or `from.deliver`) answers it. */
  def accept(op: Op, from: Upstream): Unit

/** The Stage service: every Forward stream gets an [[Upstream]] on the event loop of its connection. */
final class StageService(stage: Stage, transport: Transport) extends StageGrpc.StageImplBase:
  override def forward(responses: StreamObserver[Ack]): StreamObserver[Op] =
    val call = responses.asInstanceOf[ServerCallStreamObserver[Ack]]
    call.disableAutoRequest() // messages are requested one at a time, within MAX_INFLIGHT
    val i = transport.indexOfCurrent() // the direct executor runs this on the connection's loop
    val slot = if i >= 0 then i else 0
    val up = new Upstream(stage, slot, transport.loops(slot), call)
    call.setOnCancelHandler(() => up.cancelled())
    stage.streams.add(up)
    up.start()
    up

/** Sends the response headers as soon as a stream opens instead of with the first acknowledgement,
  * so that a client that waits for them before it sends (some stream APIs return the call only then)
  * cannot wait forever on a node that acknowledges only what it received. Later sendHeaders calls
  * (the stub's, with the first message) are dropped.
  */
final class EagerHeaders extends ServerInterceptor:
  override def interceptCall[Q, R](call: ServerCall[Q, R], headers: Metadata, next: ServerCallHandler[Q, R]): ServerCall.Listener[Q] =
    val once = new ForwardingServerCall.SimpleForwardingServerCall[Q, R](call):
      private var sent = false
      override def sendHeaders(h: Metadata): Unit =
        if !sent then
          sent = true
          call.sendHeaders(h) // the delegate itself (Scala's super call would cross grpc's package-private base class)
    once.sendHeaders(new Metadata())
    next.startCall(once, headers)

/** One inbound Forward stream (on B from A, on C from B). Confined to its event loop.
  *
  * Flow control: a message is requested (request(1)) only with a unit of the node's budget in hand,
  * so operations received plus messages requested never exceed MAX_INFLIGHT; at the limit the
  * stream stops requesting, grpc stops reading it and HTTP/2 flow control pushes back upstream.
  * Each operation is acknowledged on this stream, in whatever order the acknowledgements come.
  */
final class Upstream(stage: Stage, val slot: Int, val loop: EventLoop, out: ServerCallStreamObserver[Ack])
    extends StreamObserver[Op], Waiter, Parked:
  private var requested = false // a message requested, its budget unit taken
  private var parked = false // in the budget's waiters (or a wake-up is on its way)
  private var ended = false // no acknowledgement can be sent any more (cancelled, failed, or ended by us)
  private var halfClosed = false // the sender has no more messages
  private var holding = 0 // operations received here and not yet acknowledged

  private val wakeTask: Runnable = () =>
    parked = false
    if !ended && !halfClosed && !requested then want() else stage.budget.pass()

  /** The first request, from a task of its own: not before the stream's listener is in place. */
  def start(): Unit = loop.execute(() => if !ended then want())

  private def want(): Unit =
    if stage.budget.tryAcquire() then request()
    else if !parked then
      parked = true
      stage.budget.park(this)
      if stage.budget.tryAcquire() then request()

  private def request(): Unit =
    requested = true
    out.request(1)

  override def wake(): Unit =
    try loop.execute(wakeTask)
    catch case _: RejectedExecutionException => ()

  override def onNext(op: Op): Unit =
    if loop.inEventLoop() then received(op) else loop.execute(() => received(op))

  private def received(op: Op): Unit =
    val had = requested
    requested = false
    if ended then
      if had then stage.budget.release(1) // after we ended the stream: the sender sends it again
    else
      if !had then stage.budget.force() // never expected (grpc delivers only what was requested), but keep the count exact
      holding += 1
      stage.held.incrementAndGet()
      stage.accept(op, this)
      if !halfClosed && !ended then want()

  /** On the loop: the next node (or the ledger) acknowledged one of ours. */
  override def acked(ack: Ack): Unit =
    send(ack)
    finished(1)

  /** From the ledger's writer: a group of acknowledgements, all durable. */
  def deliver(acks: java.util.List[Ack]): Unit =
    try
      loop.execute { () =>
        var i = 0
        while i < acks.size do
          send(acks.get(i))
          i += 1
        finished(acks.size)
      }
    catch case _: RejectedExecutionException => () // shutting down: the sender sends them again

  private def send(ack: Ack): Unit =
    if !ended then
      try out.onNext(ack)
      catch case NonFatal(_) => ended = true // the stream is gone: the sender sends the operation again

  private def finished(n: Int): Unit =
    holding -= n
    stage.held.addAndGet(-n)
    stage.budget.release(n)
    if halfClosed && holding == 0 && !ended then complete()

  override def onError(t: Throwable): Unit = onLoop(() => gone())

  /** The sender half-closed: answer what we hold, then end the stream. */
  override def onCompleted(): Unit =
    onLoop { () =>
      halfClosed = true
      giveBackRequest()
      if holding == 0 && !ended then complete()
    }

  def cancelled(): Unit = onLoop(() => gone())

  /** Shutdown: end the stream now (the sender sends again what we did not acknowledge). */
  def end(): Unit =
    try onLoop(() => if !ended then complete())
    catch case _: RejectedExecutionException => ()

  private def complete(): Unit =
    ended = true
    giveBackRequest()
    stage.streams.remove(this)
    try out.onCompleted()
    catch case NonFatal(_) => ()

  private def gone(): Unit =
    ended = true
    giveBackRequest()
    stage.streams.remove(this)

  private def giveBackRequest(): Unit =
    if requested then
      requested = false
      stage.budget.release(1)

  private def onLoop(task: Runnable): Unit =
    if loop.inEventLoop() then task.run() else loop.execute(task)
