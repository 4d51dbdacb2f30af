package wsecho

import io.netty.buffer.Unpooled
import io.netty.channel.ChannelHandler.Sharable
import io.netty.channel.{ChannelFutureListener, ChannelHandlerContext, ChannelInboundHandlerAdapter}
import io.netty.handler.codec.{CorruptedFrameException, TooLongFrameException}
import io.netty.handler.codec.http.*
import io.netty.handler.timeout.{IdleState, IdleStateEvent}

import java.io.IOException
import java.nio.charset.StandardCharsets.US_ASCII

/** The plain HTTP side, before any upgrade: /healthz, /langbench-gc, 404, and the gate of /connect.
  *
  * A request for /connect that looks like an RFC 6455 upgrade (GET, `Upgrade: websocket`,
  * `Connection: upgrade`, `Sec-WebSocket-Version: 13`) is passed on to Netty's
  * WebSocketServerProtocolHandler, and this handler leaves the connection's pipeline; anything else
  * on /connect is refused here (405, or 426 naming version 13), so that Netty's handshaker factory
  * never falls back to the pre-RFC drafts (hixie-75/76, hybi-07/08) it still speaks.
  *
  * Stateless: one instance for every connection.
  */
@Sharable
final class Routes extends ChannelInboundHandlerAdapter:
  import Routes.*

  override def channelRead(ctx: ChannelHandlerContext, msg: Any): Unit = msg match
    case req: FullHttpRequest =>
      if !req.decoderResult.isSuccess then
        req.release()
        respond(ctx, HttpResponseStatus.BAD_REQUEST, keepAlive = false)
      else
        val keepAlive = HttpUtil.isKeepAlive(req)
        pathOf(req.uri) match
          case ConnectPath =>
            if req.method != HttpMethod.GET then
              req.release()
              respond(ctx, HttpResponseStatus.METHOD_NOT_ALLOWED, keepAlive = false, HttpHeaderNames.ALLOW -> "GET")
            else if !isUpgrade(req.headers) then
              req.release()
              respond(ctx, HttpResponseStatus.UPGRADE_REQUIRED, keepAlive = false, HttpHeaderNames.UPGRADE -> "websocket",
                HttpHeaderNames.SEC_WEBSOCKET_VERSION -> "13")
            else
              // The WebSocket handlers take it from here (the handshake answers 400 on a missing key).
              ctx.pipeline.remove(this)
              ctx.fireChannelRead(req)
          case "/healthz" =>
            req.release()
            respond(ctx, HttpResponseStatus.OK, keepAlive, body = Ok)
          case "/langbench-gc" =>
            req.release()
            // A full stop-the-world collection with the declared collector (Serial): every thread stops
            // for it anyway, so it runs right here on the event loop and the 204 leaves once it is done.
            System.gc()
            respond(ctx, HttpResponseStatus.NO_CONTENT, keepAlive)
          case _ =>
            req.release()
            respond(ctx, HttpResponseStatus.NOT_FOUND, keepAlive)
    case other =>
      ctx.fireChannelRead(other)

  /** Before the upgrade the silence timeout is the HTTP idle timeout; the ping events are not for us. */
  override def userEventTriggered(ctx: ChannelHandlerContext, evt: Any): Unit = evt match
    case e: IdleStateEvent =>
      if e.state == IdleState.READER_IDLE then ctx.close()
    case _ => ctx.fireUserEventTriggered(evt)

  override def exceptionCaught(ctx: ChannelHandlerContext, cause: Throwable): Unit =
    cause match
      case _: IOException | _: CorruptedFrameException | _: TooLongFrameException => () // the peer's doing
      case e => Log.error(s"HTTP connection ${ctx.channel.remoteAddress}", e)
    ctx.close()

object Routes:
  val ConnectPath = "/connect"
  private val Ok = "ok\n".getBytes(US_ASCII)

  /** The path of a request-target, without its query. */
  private def pathOf(uri: String): String =
    val q = uri.indexOf('?')
    if q < 0 then uri else uri.substring(0, q)

  private def isUpgrade(h: HttpHeaders): Boolean =
    h.containsValue(HttpHeaderNames.UPGRADE, HttpHeaderValues.WEBSOCKET, true) &&
      h.containsValue(HttpHeaderNames.CONNECTION, HttpHeaderValues.UPGRADE, true) &&
      h.get(HttpHeaderNames.SEC_WEBSOCKET_VERSION) == "13"

  private def respond(
      ctx: ChannelHandlerContext,
      status: HttpResponseStatus,
      keepAlive: Boolean,
      headers: (CharSequence, String)*
  ): Unit = respond(ctx, status, keepAlive, Array.emptyByteArray, headers*)

  private def respond(
      ctx: ChannelHandlerContext,
      status: HttpResponseStatus,
      keepAlive: Boolean,
      body: Array[Byte],
      headers: (CharSequence, String)*
  ): Unit =
    val content = if body.isEmpty then Unpooled.EMPTY_BUFFER else Unpooled.wrappedBuffer(body)
    val res = new DefaultFullHttpResponse(HttpVersion.HTTP_1_1, status, content)
    if body.nonEmpty then res.headers.set(HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.TEXT_PLAIN)
    if status != HttpResponseStatus.NO_CONTENT then res.headers.setInt(HttpHeaderNames.CONTENT_LENGTH, body.length)
    headers.foreach((name, value) => res.headers.set(name, value))
    HttpUtil.setKeepAlive(res, keepAlive)
    val sent = ctx.writeAndFlush(res)
    if !keepAlive then sent.addListener(ChannelFutureListener.CLOSE)
