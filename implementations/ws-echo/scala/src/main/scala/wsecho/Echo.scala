package wsecho

import io.netty.buffer.Unpooled
import io.netty.channel.ChannelHandler.Sharable
import io.netty.channel.{ChannelFutureListener, ChannelHandlerContext, ChannelInboundHandlerAdapter}
import io.netty.handler.codec.{CorruptedFrameException, TooLongFrameException}
import io.netty.handler.codec.http.websocketx.*
import io.netty.handler.timeout.{IdleState, IdleStateEvent}
import io.netty.util.ReferenceCountUtil

import java.io.IOException

/** The echo itself, after the upgrade. By the time a frame gets here Netty's handlers have already
  * unmasked it (WebSocket13FrameDecoder: frames over 1 MiB closed with 1009, protocol errors with
  * 1002), answered pings with pongs and dropped pongs (WebSocketServerProtocolHandler), checked text
  * for UTF-8 ([[Utf8Text]]: 1007) and joined fragments into one message ([[Messages]]).
  *
  * Stateless: one instance for every connection (the close state lives in the protocol handler,
  * which refuses any write after a close frame went out).
  */
@Sharable
final class Echo extends ChannelInboundHandlerAdapter:

  override def channelRead(ctx: ChannelHandlerContext, msg: Any): Unit = msg match
    case message: (TextWebSocketFrame | BinaryWebSocketFrame) =>
      // The same frame object goes back out: same type, the decoder's buffer itself (no copy).
      // Flushed once per read batch (channelReadComplete).
      ctx.write(message, ctx.voidPromise())
    case close: CloseWebSocketFrame =>
      // The closing handshake: the client's status code back (1000 when it sent none), then the
      // TCP close. When our own close went first (shutdown), the protocol handler refuses this
      // second one and the listener just closes.
      val code = close.statusCode
      close.release()
      ctx
        .writeAndFlush(new CloseWebSocketFrame(if code < 0 then WebSocketCloseStatus.NORMAL_CLOSURE.code else code, null))
        .addListener(ChannelFutureListener.CLOSE)
    case other =>
      ReferenceCountUtil.release(other)

  override def channelReadComplete(ctx: ChannelHandlerContext): Unit =
    ctx.flush()
    // Back-pressure: a client that sends faster than it reads stops being read until its echoes
    // drain below the low water mark (channelWritabilityChanged).
    if !ctx.channel.isWritable then ctx.channel.config.setAutoRead(false)
    ctx.fireChannelReadComplete()

  override def channelWritabilityChanged(ctx: ChannelHandlerContext): Unit =
    if ctx.channel.isWritable then ctx.channel.config.setAutoRead(true)
    ctx.fireChannelWritabilityChanged()

  /** Keep-alive: a ping after 5 s with nothing read or written; 15 s without a byte from the client
    * (its pongs count): the connection is dropped (TCP close, no close frame: the peer is gone). */
  override def userEventTriggered(ctx: ChannelHandlerContext, evt: Any): Unit = evt match
    case e: IdleStateEvent =>
      e.state match
        case IdleState.READER_IDLE => ctx.close()
        case IdleState.ALL_IDLE    => ctx.writeAndFlush(new PingWebSocketFrame(Unpooled.EMPTY_BUFFER), ctx.voidPromise())
        case _                     => ()
    case _ => ctx.fireUserEventTriggered(evt)

  override def exceptionCaught(ctx: ChannelHandlerContext, cause: Throwable): Unit =
    cause match
      // The peer's doing: a reset, or a protocol violation that Netty has already answered with
      // its close frame (1002, 1007, 1009).
      case _: IOException | _: CorruptedFrameException | _: TooLongFrameException => ()
      case e => Log.error(s"WebSocket connection ${ctx.channel.remoteAddress}", e)
    ctx.close()

/** Reassembles fragmented messages (a single-frame message passes through untouched). A message
  * that grows past the limit is answered with close 1009 and the connection closed (Netty's
  * aggregator would only raise TooLongFrameException, with no close frame). */
final class Messages(maxBytes: Int) extends WebSocketFrameAggregator(maxBytes):
  override protected def handleOversizedMessage(ctx: ChannelHandlerContext, oversized: WebSocketFrame): Unit =
    ctx
      .writeAndFlush(new CloseWebSocketFrame(WebSocketCloseStatus.MESSAGE_TOO_BIG, s"message over $maxBytes bytes"))
      .addListener(ChannelFutureListener.CLOSE)
