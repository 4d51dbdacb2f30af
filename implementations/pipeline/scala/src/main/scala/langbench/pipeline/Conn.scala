package langbench.pipeline

import com.google.protobuf.ByteString
import io.grpc.netty.shaded.io.netty.buffer.Unpooled
import io.grpc.netty.shaded.io.netty.channel.{ChannelFutureListener, ChannelHandlerContext, ChannelInboundHandlerAdapter}
import io.grpc.netty.shaded.io.netty.handler.codec.http.*
import io.grpc.netty.shaded.io.netty.util.ReferenceCountUtil
import langbench.pipeline.proto.Ack

import java.util.{ArrayDeque, Arrays}
import java.util.concurrent.RejectedExecutionException

/** One request's place in its connection's answer order. */
final class Slot(val conn: Conn, val keepAlive: Boolean) extends Waiter:
  var status: HttpResponseStatus = null // null: not decided yet (waiting for C's acknowledgement)
  var digest: ByteString = null
  var counted = false // holds a unit of the node's budget
  var id: String = null
  var body: Array[Byte] = null // a complete operation waiting to be admitted

  override def acked(ack: Ack): Unit = conn.onAck(this, ack)

/** One HTTP/1.1 connection of node a, confined to its event loop (which is also the loop of its
  * [[Lane]]: the operation, its gRPC send, the acknowledgement and the answer never change thread).
  *
  * `POST /op/{id}`: the body (at most MAX_PAYLOAD bytes, Content-Length or chunked) is copied once
  * into a byte array; the complete request takes a unit of the budget, is hashed (dA) and goes down
  * the lane; its 200 is written when C's acknowledgement comes back. Answers leave in request order
  * (keep-alive, pipelining). At MAX_INFLIGHT the connection stops reading (autoRead off) and waits
  * in the budget's queue; the requests already decoded wait, unadmitted, in order.
  */
final class Conn(front: Front, lane: Lane) extends ChannelInboundHandlerAdapter, Parked:
  import Conn.*

  private var ctx: ChannelHandlerContext = scala.compiletime.uninitialized
  private val slots = new ArrayDeque[Slot]() // every request not yet answered, in order
  private val waiting = new ArrayDeque[Slot]() // complete operations not yet admitted (budget full)
  private var current: Slot = null // the operation whose body is being read
  private var body: Array[Byte] = null
  private var bodyLen = 0
  private var closed = false
  private var parked = false
  private var needFlush = false

  private val wakeTask: Runnable = () =>
    parked = false
    if !closed && !waiting.isEmpty then admitWaiting() else front.budget.pass()
  private val abortTask: Runnable = () => abortNow()

  override def handlerAdded(ctx: ChannelHandlerContext): Unit = this.ctx = ctx

  override def channelActive(ctx: ChannelHandlerContext): Unit =
    front.conns.add(this)
    ctx.fireChannelActive()
    ()

  override def channelRead(ctx: ChannelHandlerContext, msg: Any): Unit =
    try
      msg match
        case m: HttpRequest =>
          head(m)
          m match
            case c: HttpContent => content(c)
            case _              =>
        case c: HttpContent => content(c)
        case _              =>
      flushReady(flush = false) // answers decided from the head alone (404, 405, 413, ...) go out at once
    finally ReferenceCountUtil.release(msg)

  override def channelReadComplete(ctx: ChannelHandlerContext): Unit =
    if needFlush then
      needFlush = false
      ctx.flush()
    ctx.fireChannelReadComplete()
    ()

  override def channelInactive(ctx: ChannelHandlerContext): Unit =
    closed = true
    front.conns.remove(this)
    // Answers decided but not written: give their units back. Those still waiting for C give theirs
    // back when the acknowledgement comes (the operation itself carries on: A keeps it until acknowledged).
    slots.forEach(s => if s.status != null then release(s))
    slots.clear()
    waiting.clear()
    current = null
    body = null
    ctx.fireChannelInactive()
    ()

  override def exceptionCaught(ctx: ChannelHandlerContext, cause: Throwable): Unit =
    ctx.close() // reset by peer and the like: nothing to log per connection
    ()

  override def wake(): Unit =
    try ctx.executor.execute(wakeTask)
    catch case _: RejectedExecutionException => ()

  /** Shutdown: every request not answered yet gets 503, then the connection closes. */
  def abort(): Unit =
    try ctx.executor.execute(abortTask)
    catch case _: RejectedExecutionException => ()

  private def head(m: HttpRequest): Unit =
    if closed then ()
    else if m.decoderResult.isFailure then decide(HttpResponseStatus.BAD_REQUEST, keepAlive = false)
    else
      val keepAlive = m.protocolVersion == HttpVersion.HTTP_1_1 && HttpUtil.isKeepAlive(m)
      val uri = m.uri
      val q = uri.indexOf('?')
      val path = if q < 0 then uri else uri.substring(0, q)
      if path.startsWith(OpPrefix) then
        val id = path.substring(OpPrefix.length)
        if m.method != HttpMethod.POST then decide(HttpResponseStatus.METHOD_NOT_ALLOWED, keepAlive)
        else if !Ids.valid(id) then decide(HttpResponseStatus.BAD_REQUEST, keepAlive)
        else if front.stopping then decide(HttpResponseStatus.SERVICE_UNAVAILABLE, keepAlive = false)
        else
          val declared = HttpUtil.getContentLength(m, -1L)
          val expect = HttpUtil.is100ContinueExpected(m)
          // Over the limit: 413 and the body is read and dropped (the connection stays usable); a
          // client that waits for 100-continue sends no body, so that connection is closed instead.
          if declared > front.maxPayload then decide(HttpResponseStatus.REQUEST_ENTITY_TOO_LARGE, keepAlive && !expect)
          else
            val s = new Slot(this, keepAlive)
            s.id = id
            slots.add(s)
            current = s
            body = new Array[Byte](if declared >= 0 then declared.toInt else math.min(4096, front.maxPayload))
            bodyLen = 0
            if expect then ctx.writeAndFlush(new DefaultFullHttpResponse(HttpVersion.HTTP_1_1, HttpResponseStatus.CONTINUE, Unpooled.EMPTY_BUFFER))
      else if path == "/healthz" then
        if m.method == HttpMethod.GET || m.method == HttpMethod.HEAD then decide(HttpResponseStatus.OK, keepAlive)
        else decide(HttpResponseStatus.METHOD_NOT_ALLOWED, keepAlive)
      else decide(HttpResponseStatus.NOT_FOUND, keepAlive)

  /** An answer known from the head alone; the request's body, if any, is dropped. */
  private def decide(status: HttpResponseStatus, keepAlive: Boolean): Unit =
    val s = new Slot(this, keepAlive)
    s.status = status
    slots.add(s)

  private def content(c: HttpContent): Unit =
    if closed then ()
    else if c.decoderResult.isFailure then
      if current != null then
        current.status = HttpResponseStatus.BAD_REQUEST
        current = null
        body = null
      else decide(HttpResponseStatus.BAD_REQUEST, keepAlive = false)
      flushReady(flush = true)
      if !closed then
        closed = true
        ctx.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE)
      ()
    else
      if current != null then
        val buf = c.content
        val n = buf.readableBytes
        if n > 0 then
          if bodyLen + n > front.maxPayload then // a chunked body over the limit: 413, the rest dropped
            current.status = HttpResponseStatus.REQUEST_ENTITY_TOO_LARGE
            current = null
            body = null
          else
            if bodyLen + n > body.length then
              body = Arrays.copyOf(body, math.min(front.maxPayload, math.max(bodyLen + n, body.length * 2)))
            buf.getBytes(buf.readerIndex, body, bodyLen, n)
            bodyLen += n
      if c.isInstanceOf[LastHttpContent] then
        if current != null then
          val s = current
          s.body = if bodyLen == body.length then body else Arrays.copyOf(body, bodyLen)
          current = null
          body = null
          complete(s)

  /** A complete operation: admitted at once when the budget has room, else it waits (and reading stops). */
  private def complete(s: Slot): Unit =
    if front.stopping then
      s.status = HttpResponseStatus.SERVICE_UNAVAILABLE
      s.body = null
    else if waiting.isEmpty && front.budget.tryAcquire() then admit(s)
    else
      waiting.add(s)
      ctx.channel.config.setAutoRead(false)
      admitWaiting()

  private def admitWaiting(): Unit =
    var again = true
    while again do
      again = false
      while !waiting.isEmpty && front.budget.tryAcquire() do admit(waiting.poll())
      if !waiting.isEmpty && !parked then
        parked = true
        front.budget.park(this)
        again = true // once more: a unit may have come back before we were queued
    if waiting.isEmpty && !closed then
      ctx.channel.config.setAutoRead(true)
      ()

  private def admit(s: Slot): Unit =
    s.counted = true
    val b = s.body
    s.body = null
    front.forward(lane, s, s.id, b)

  /** From the lane (normally on this loop already). */
  def onAck(s: Slot, ack: Ack): Unit =
    if ctx.executor.inEventLoop then answered(s, ack)
    else ctx.executor.execute(() => answered(s, ack))

  private def answered(s: Slot, ack: Ack): Unit =
    if s.status == null then
      s.status = HttpResponseStatus.OK
      s.digest = ack.getDigest
    if closed then release(s) else flushReady(flush = true)

  /** Writes the answers that are ready, in request order, up to the first that is not. */
  private def flushReady(flush: Boolean): Unit =
    var wrote = false
    while !closed && !slots.isEmpty && slots.peek.status != null do
      write(slots.poll())
      wrote = true
    if wrote && !closed then
      if flush then ctx.flush() else needFlush = true

  private def write(s: Slot): Unit =
    release(s)
    val res =
      if s.digest != null then
        val n = s.digest.size
        val content = ctx.alloc.buffer(2 * n)
        Hex.write(s.digest, content)
        val headers =
          if n == 32 then (if s.keepAlive then DigestHeaders else DigestCloseHeaders)
          else digestHeaders(2 * n, s.keepAlive)
        new DefaultFullHttpResponse(HttpVersion.HTTP_1_1, s.status, content, headers, EmptyHttpHeaders.INSTANCE)
      else
        new DefaultFullHttpResponse(HttpVersion.HTTP_1_1, s.status, Unpooled.EMPTY_BUFFER, if s.keepAlive then EmptyHeaders else EmptyCloseHeaders, EmptyHttpHeaders.INSTANCE)
    if s.keepAlive then ctx.write(res, ctx.voidPromise())
    else
      closed = true
      ctx.writeAndFlush(res).addListener(ChannelFutureListener.CLOSE)
    ()

  private def release(s: Slot): Unit =
    if s.counted then
      s.counted = false
      front.budget.release(1)

  private def abortNow(): Unit =
    if !closed then
      slots.forEach(s => if s.status == null then s.status = HttpResponseStatus.SERVICE_UNAVAILABLE)
      waiting.clear()
      flushReady(flush = false)
      if !closed then
        closed = true
        ctx.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE)
      ()

object Conn:
  private val OpPrefix = "/op/"
  private val DigestHeaders = new ReadOnlyHttpHeaders(
    false,
    HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.TEXT_PLAIN,
    HttpHeaderNames.CONTENT_LENGTH, "64"
  )
  private val DigestCloseHeaders = new ReadOnlyHttpHeaders(
    false,
    HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.TEXT_PLAIN,
    HttpHeaderNames.CONTENT_LENGTH, "64",
    HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE
  )
  private val EmptyHeaders = new ReadOnlyHttpHeaders(false, HttpHeaderNames.CONTENT_LENGTH, "0")
  private val EmptyCloseHeaders = new ReadOnlyHttpHeaders(false, HttpHeaderNames.CONTENT_LENGTH, "0", HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE)

  private def digestHeaders(length: Int, keepAlive: Boolean): HttpHeaders =
    val h = new DefaultHttpHeaders()
    h.set(HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.TEXT_PLAIN)
    h.set(HttpHeaderNames.CONTENT_LENGTH, Integer.toString(length))
    if !keepAlive then h.set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE)
    h
