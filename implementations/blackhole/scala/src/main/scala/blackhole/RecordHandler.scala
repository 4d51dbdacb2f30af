package blackhole

import io.netty.buffer.{ByteBuf, CompositeByteBuf, Unpooled}
import io.netty.channel.{ChannelFutureListener, ChannelHandlerContext, ChannelInboundHandlerAdapter}
import io.netty.handler.codec.http.*
import io.netty.util.ReferenceCountUtil

import java.util.ArrayDeque
import java.util.concurrent.atomic.AtomicInteger

/** State shared by the connections of one server. */
final class Shared(val recorders: Array[Recorder], val ids: IdSource):
  /** Requests begun (head received) and not yet answered or abandoned. */
  val inFlight = new AtomicInteger
  private val next = new AtomicInteger

  /** The recorder of a new connection (round robin; one writer with one CPU). */
  def recorder(): Recorder = if recorders.isEmpty then null else recorders(Math.floorMod(next.getAndIncrement(), recorders.length))

/** One HTTP/1.1 connection: every complete request (any method, any path, body of at most 1 MiB
  * after de-chunking) becomes one record, handed to the connection's recorder, and is answered
  * 200 with an empty body once the recorder took it. Bodies over 1 MiB get 413 (not recorded),
  * malformed requests 400 and a closed connection; a request cut off by the client leaves nothing.
  *
  * Runs on the connection's event loop and never blocks it: when the recorder's queue is full, the
  * finished request waits here (with the requests pipelined behind it, answered in order) and the
  * connection stops reading until the recorder wakes it.
  */
final class RecordHandler(shared: Shared) extends ChannelInboundHandlerAdapter with Waiter:
  import RecordHandler.*

  private val recorder = shared.recorder() // null: RECORD=0
  private var ctx: ChannelHandlerContext = scala.compiletime.uninitialized

  private var req: HttpRequest = null // the request being received (head seen, body not complete)
  private var body: ByteBuf = null // its body so far (recording only)
  private var bodyBytes = 0L
  private var discarding = false // after a 413: the rest of that body is read and dropped, then close
  private var discarded = 0L
  private var closed = false // no further request is taken on this connection

  private val waiting = new ArrayDeque[Done] // complete, not yet taken by the recorder (in order)
  private var registered = false // in the recorder's waiters, or a wake-up is on its way
  private var needFlush = false
  private var sentContinue = false // the codec pairs answers and request methods one to one; a 100 shifts them
  private val wakeTask: Runnable = () =>
    registered = false
    if !closed || !waiting.isEmpty then drain(flush = true)

  override def handlerAdded(ctx: ChannelHandlerContext): Unit = this.ctx = ctx

  override def channelRead(ctx: ChannelHandlerContext, msg: Any): Unit =
    try
      msg match
        case m: HttpRequest =>
          onHead(m)
          m match
            case c: HttpContent if !closed && req != null => onContent(c)
            case _                                        =>
        case c: HttpContent => onContent(c)
        case _              =>
    finally ReferenceCountUtil.release(msg)

  override def channelReadComplete(ctx: ChannelHandlerContext): Unit =
    if needFlush then
      needFlush = false
      ctx.flush()
    ctx.fireChannelReadComplete()

  override def channelInactive(ctx: ChannelHandlerContext): Unit =
    // A request cut off mid-body and requests not yet taken by the recorder: never answered, never recorded.
    val abandoned = (if req != null then 1 else 0) + waiting.size
    if abandoned > 0 then shared.inFlight.addAndGet(-abandoned)
    req = null
    waiting.clear()
    releaseBody()
    closed = true
    ctx.fireChannelInactive()

  override def exceptionCaught(ctx: ChannelHandlerContext, cause: Throwable): Unit =
    closed = true
    ctx.close() // reset by peer and the like: nothing to log per connection

  override def wake(): Unit =
    try ctx.executor.execute(wakeTask)
    catch case _: java.util.concurrent.RejectedExecutionException => () // event loop stopped: the connection is gone

  private def onHead(m: HttpRequest): Unit =
    if closed then return
    if discarding then // a pipelined request after a 413: the connection ends with the 413
      close()
      return
    if m.decoderResult.isFailure then
      reject(m.protocolVersion, HttpResponseStatus.BAD_REQUEST)
      close()
      return
    shared.inFlight.incrementAndGet()
    val declared = HttpUtil.getContentLength(m, -1L)
    if declared > MaxBody then
      shared.inFlight.decrementAndGet()
      tooLarge(m.protocolVersion)
    else
      if HttpUtil.is100ContinueExpected(m) then
        sentContinue = true
        ctx.writeAndFlush(new DefaultFullHttpResponse(m.protocolVersion, HttpResponseStatus.CONTINUE, Unpooled.EMPTY_BUFFER))
      req = m
      bodyBytes = 0

  private def onContent(c: HttpContent): Unit =
    if closed then return
    val last = c.isInstanceOf[LastHttpContent]
    if c.decoderResult.isFailure then // a bad chunk: the request is dropped
      abandonRequest()
      reject(HttpVersion.HTTP_1_1, HttpResponseStatus.BAD_REQUEST)
      close()
    else if discarding then
      discarded += c.content.readableBytes
      if last || discarded > MaxDiscard then close()
    else if req != null then
      val n = c.content.readableBytes
      bodyBytes += n
      if bodyBytes > MaxBody then // a chunked body over the limit
        val version = req.protocolVersion
        abandonRequest()
        tooLarge(version)
        if last then close()
      else
        if n > 0 && recorder != null then append(c.content)
        if last then complete()

  private def append(part: ByteBuf): Unit =
    if body == null then body = part.retain() // the whole body in one piece: the common case
    else
      body match
        case comp: CompositeByteBuf => comp.addComponent(true, part.retain())
        case first =>
          val comp = ctx.alloc.compositeBuffer(MaxComponents)
          comp.addComponent(true, first)
          comp.addComponent(true, part.retain())
          body = comp

  /** The request is complete: record it, answer it. */
  private def complete(): Unit =
    val r = req
    req = null
    val keepAlive = HttpUtil.isKeepAlive(r)
    val connect = r.method == HttpMethod.CONNECT
    if recorder == null then answer(r.protocolVersion, keepAlive, connect)
    else
      val id = r.headers.get(RequestId) match
        case null | "" => shared.ids.next()
        case sent       => sent
      val rec =
        try Encoder.get.encode(r, body, id)
        finally releaseBody()
      val done = new Done(rec, r.protocolVersion, keepAlive, connect)
      if waiting.isEmpty && recorder.tryOffer(rec) then answer(done.version, done.keepAlive, done.connect)
      else
        waiting.add(done)
        ctx.channel.config.setAutoRead(false) // backpressure: stop reading this connection
        drain(flush = false)

  /** Hands waiting requests to the recorder, in order, answering each; registers for a wake-up
    * when the queue is still full (and re-tries once after registering: no lost wake-up).
    */
  private def drain(flush: Boolean): Unit =
    var again = true
    while again do
      again = false
      while !waiting.isEmpty && !closed && recorder.tryOffer(waiting.peek.record) do
        val d = waiting.poll()
        answer(d.version, d.keepAlive, d.connect)
      if closed then
        if !waiting.isEmpty then shared.inFlight.addAndGet(-waiting.size)
        waiting.clear()
      else if !waiting.isEmpty && !registered then
        registered = true
        recorder.await(this)
        again = true
    if waiting.isEmpty && !closed && !ctx.channel.config.isAutoRead then ctx.channel.config.setAutoRead(true)
    if flush && needFlush then
      needFlush = false
      ctx.flush()

  private def answer(version: HttpVersion, keepAlive: Boolean, connect: Boolean): Unit =
    shared.inFlight.decrementAndGet()
    val headers =
      if connect || sentContinue then new DefaultHttpHeaders().add(HttpHeaderNames.CONTENT_LENGTH, Zero) // the encoder edits a CONNECT answer's headers
      else if !keepAlive then CloseHeaders
      else if version == HttpVersion.HTTP_1_1 then KeepAliveHeaders
      else KeepAlive10Headers
    val res = new DefaultFullHttpResponse(version, HttpResponseStatus.OK, Unpooled.EMPTY_BUFFER, headers, EmptyHttpHeaders.INSTANCE)
    if keepAlive then
      ctx.write(res, ctx.voidPromise())
      needFlush = true
    else
      closed = true
      ctx.writeAndFlush(res).addListener(ChannelFutureListener.CLOSE)

  /** 413: the body is read to its end and dropped (so that the client can read the answer), then
    * the connection is closed.
    */
  private def tooLarge(version: HttpVersion): Unit =
    reject(version, HttpResponseStatus.REQUEST_ENTITY_TOO_LARGE)
    discarding = true
    discarded = 0
    ctx.channel.config.setAutoRead(true)

  private def reject(version: HttpVersion, status: HttpResponseStatus): Unit =
    if !waiting.isEmpty then
      // Requests before this one still wait for the recorder and must be answered first: rather
      // than answering out of order, the connection ends (none of them was answered or recorded).
      shared.inFlight.addAndGet(-waiting.size)
      waiting.clear()
      close()
      return
    val res = new DefaultFullHttpResponse(version, status, Unpooled.EMPTY_BUFFER, CloseHeaders, EmptyHttpHeaders.INSTANCE)
    ctx.writeAndFlush(res, ctx.voidPromise())

  private def abandonRequest(): Unit =
    if req != null then
      req = null
      shared.inFlight.decrementAndGet()
    releaseBody()

  private def releaseBody(): Unit =
    if body != null then
      body.release()
      body = null

  private def close(): Unit =
    closed = true
    abandonRequest()
    ctx.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE)

object RecordHandler:
  val MaxBody: Long = 1L << 20
  private val MaxDiscard = 64L << 20 // a body after a 413 is read up to this much, then the connection closes
  private val MaxComponents = 1024
  private val RequestId = "X-Request-ID"
  private val Zero = "0"

  private val KeepAliveHeaders = new ReadOnlyHttpHeaders(false, HttpHeaderNames.CONTENT_LENGTH, Zero)
  private val KeepAlive10Headers =
    new ReadOnlyHttpHeaders(false, HttpHeaderNames.CONTENT_LENGTH, Zero, HttpHeaderNames.CONNECTION, HttpHeaderValues.KEEP_ALIVE)
  private val CloseHeaders = new ReadOnlyHttpHeaders(false, HttpHeaderNames.CONTENT_LENGTH, Zero, HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE)

  /** A complete request waiting for room in the recorder's queue. */
  private final class Done(val record: Array[Byte], val version: HttpVersion, val keepAlive: Boolean, val connect: Boolean)
