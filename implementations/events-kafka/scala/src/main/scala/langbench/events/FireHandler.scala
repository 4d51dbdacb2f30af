package langbench.events

import io.netty.buffer.Unpooled
import io.netty.channel.{ChannelFutureListener, ChannelHandlerContext, ChannelInboundHandlerAdapter}
import io.netty.handler.codec.http.*
import io.netty.handler.timeout.IdleStateEvent
import io.netty.util.ReferenceCountUtil

import scala.collection.mutable

/** One HTTP/1.1 connection: `POST /fire/{id}` produces the event and answers 200 once the broker
  * acknowledged it, 503 if the producer reports it was not delivered; 400/404/405 for bad input.
  *
  * Everything here runs on the connection's event loop. Answers to requests pipelined on one
  * connection are written in request order, whatever order the broker acknowledges them in.
  */
final class FireHandler(publisher: EventPublisher) extends ChannelInboundHandlerAdapter:
  import FireHandler.*

  /** Requests of this connection not answered yet, oldest first. */
  private val pending = mutable.Queue.empty[Slot]
  private var ctx: ChannelHandlerContext = scala.compiletime.uninitialized

  override def handlerAdded(ctx: ChannelHandlerContext): Unit = this.ctx = ctx

  override def channelRead(ctx: ChannelHandlerContext, msg: Any): Unit = msg match
    case req: FullHttpRequest =>
      try handle(req)
      finally req.release()
    case other => ReferenceCountUtil.release(other)

  override def userEventTriggered(ctx: ChannelHandlerContext, evt: Any): Unit = evt match
    case _: IdleStateEvent if pending.isEmpty => ctx.close()
    case _                                    => ctx.fireUserEventTriggered(evt)

  override def exceptionCaught(ctx: ChannelHandlerContext, cause: Throwable): Unit = ctx.close()

  private def handle(req: FullHttpRequest): Unit =
    val slot = new Slot(req.protocolVersion, HttpUtil.isKeepAlive(req) && req.decoderResult.isSuccess)
    pending.enqueue(slot)
    if pending.size >= MaxPipelined then ctx.channel.config.setAutoRead(false)
    if req.decoderResult.isFailure then answer(slot, HttpResponseStatus.BAD_REQUEST)
    else
      val path = new QueryStringDecoder(req.uri).path
      if !path.startsWith(FirePrefix) || path.indexOf('/', FirePrefix.length) >= 0 then answer(slot, HttpResponseStatus.NOT_FOUND)
      else if req.method != HttpMethod.POST then answer(slot, HttpResponseStatus.METHOD_NOT_ALLOWED)
      else
        Fire.parseId(path.substring(FirePrefix.length)) match
          case None => answer(slot, HttpResponseStatus.NOT_FOUND)
          case Some(id) =>
            Fire.parseReason(req.content.nioBuffer) match
              case None => answer(slot, HttpResponseStatus.BAD_REQUEST)
              case Some(reason) =>
                val loop = ctx.executor
                publisher.publish(
                  id,
                  Fire.event(id, reason),
                  outcome =>
                    val status = if outcome == EventPublisher.Delivered then HttpResponseStatus.OK else HttpResponseStatus.SERVICE_UNAVAILABLE
                    if loop.inEventLoop then answer(slot, status) else loop.execute(() => answer(slot, status))
                )

  /** Records the answer of `slot` and writes every answer now due, in request order. */
  private def answer(slot: Slot, status: HttpResponseStatus): Unit =
    slot.status = status
    var wrote = false
    while pending.nonEmpty && pending.head.status != null do
      val s = pending.dequeue()
      val res = new DefaultFullHttpResponse(s.version, s.status, Unpooled.EMPTY_BUFFER)
      res.headers.setInt(HttpHeaderNames.CONTENT_LENGTH, 0)
      if s.status == HttpResponseStatus.METHOD_NOT_ALLOWED then res.headers.set(HttpHeaderNames.ALLOW, HttpMethod.POST.name)
      HttpUtil.setKeepAlive(res, s.keepAlive)
      val written = ctx.write(res)
      wrote = true
      if !s.keepAlive then
        written.addListener(ChannelFutureListener.CLOSE)
        pending.clear() // the connection ends here; later pipelined requests are not answered
    if wrote then ctx.flush()
    if pending.size < MaxPipelined && !ctx.channel.config.isAutoRead then ctx.channel.config.setAutoRead(true)

object FireHandler:
  private val FirePrefix = "/fire/"

  /** Reading from a connection pauses while this many of its requests are unanswered. */
  private val MaxPipelined = 16

  private final class Slot(val version: HttpVersion, val keepAlive: Boolean):
    var status: HttpResponseStatus = null
