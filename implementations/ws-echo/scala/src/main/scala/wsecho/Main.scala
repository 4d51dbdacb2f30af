package wsecho

import io.netty.bootstrap.ServerBootstrap
import io.netty.channel.epoll.{Epoll, EpollEventLoopGroup, EpollServerSocketChannel}
import io.netty.channel.group.{ChannelMatcher, ChannelMatchers, DefaultChannelGroup}
import io.netty.channel.nio.NioEventLoopGroup
import io.netty.channel.socket.SocketChannel
import io.netty.channel.socket.nio.NioServerSocketChannel
import io.netty.channel.{Channel, ChannelInitializer, ChannelOption, EventLoopGroup, ServerChannel}
import io.netty.handler.codec.http.websocketx.{
  CloseWebSocketFrame,
  WebSocketCloseStatus,
  WebSocketFrameEncoder,
  WebSocketServerProtocolConfig,
  WebSocketServerProtocolHandler
}
import io.netty.handler.codec.http.{HttpObjectAggregator, HttpServerCodec}
import io.netty.handler.timeout.IdleStateHandler
import io.netty.util.concurrent.{DefaultThreadFactory, GlobalEventExecutor}
import sun.misc.Signal

import java.util.concurrent.{CountDownLatch, TimeUnit}

/** ws-echo: a WebSocket echo server on Netty (scenarios/ws-echo/README.md).
  *
  * Environment: HOST (default 127.0.0.1), PORT (default 8080), LANGBENCH_CPUS (event-loop threads,
  * default: the CPUs the JVM sees). On SIGTERM/SIGINT: stop accepting,
  * send close 1001 on every WebSocket, give the clients up to 1.5 s to answer it, close whatever is
  * left, stop the event loops, exit 0.
  */
object Main:
  private val CloseHandshakeWaitMs = 1500L

  def main(args: Array[String]): Unit =
    val started = System.nanoTime()
    // SIGTERM is taken over (rather than left to a shutdown hook) so that the orderly stop below can
    // end in exit status 0: a JVM stopped by the signal's default handler exits 143.
    val stop = new CountDownLatch(1)
    @volatile var signal = ""
    List("TERM", "INT").foreach(name => Signal.handle(new Signal(name), s => { signal = s.getName; stop.countDown() }))

    val env = sys.env.map((k, v) => k -> v.trim).filter(_._2.nonEmpty)
    val host = env.getOrElse("HOST", "127.0.0.1")
    val port = env.getOrElse("PORT", "8080").toIntOption.filter(p => p > 0 && p < 65536).getOrElse {
      Log.error(s"PORT is not a valid port: ${env("PORT")}")
      sys.exit(2)
    }
    val cpus = env.get("LANGBENCH_CPUS").flatMap(_.toIntOption).filter(_ > 0).getOrElse(Runtime.getRuntime.availableProcessors())

    val (group, channelClass) = eventLoops(cpus)
    val connections = new DefaultChannelGroup("connections", GlobalEventExecutor.INSTANCE)
    val server =
      try bind(host, port, group, channelClass, connections)
      catch
        case e: Exception =>
          Log.error(s"cannot listen on $host:$port", e)
          sys.exit(1)
    Log.info(
      s"listening on $host:$port (${channelClass.getSimpleName}), $cpus event-loop thread(s), " +
        s"max message ${Limits.MaxMessageBytes} bytes, ready in ${(System.nanoTime() - started) / 1000000} ms"
    )

    stop.await()
    val stopAt = System.nanoTime()
    def elapsedMs = (System.nanoTime() - stopAt) / 1000000
    Log.info(s"SIG$signal: stopping, ${connections.size} connection(s) open")
    server.close().awaitUninterruptibly(500) // no new connections

    // Upgraded connections (a WebSocket encoder in the pipeline) get close 1001 and are closed once
    // the client answers it (Echo); plain HTTP connections are closed at once.
    val upgraded: ChannelMatcher = ch => ch.pipeline.get(classOf[WebSocketFrameEncoder]) != null
    connections.close(ChannelMatchers.invert(upgraded))
    connections.writeAndFlush(new CloseWebSocketFrame(WebSocketCloseStatus.ENDPOINT_UNAVAILABLE, "server shutting down"), upgraded)
    val waitUntil = System.nanoTime() + CloseHandshakeWaitMs * 1000000
    while !connections.isEmpty && System.nanoTime() < waitUntil do Thread.sleep(10)
    val unanswered = connections.size
    connections.close().awaitUninterruptibly(1000)
    group.shutdownGracefully(0, 500, TimeUnit.MILLISECONDS).awaitUninterruptibly(1500)
    Log.info(s"stopped in $elapsedMs ms ($unanswered connection(s) closed without the client's close frame)")
    System.exit(0)

  /** LANGBENCH_CPUS event-loop threads (native epoll where available) accept, read, echo and write. */
  private def eventLoops(cpus: Int): (EventLoopGroup, Class[? <: ServerChannel]) =
    val threads = new DefaultThreadFactory("ws", true)
    if Epoll.isAvailable then (new EpollEventLoopGroup(cpus, threads), classOf[EpollServerSocketChannel])
    else
      Log.warn(s"native epoll unavailable (${Epoll.unavailabilityCause}), using NIO")
      (new NioEventLoopGroup(cpus, threads), classOf[NioServerSocketChannel])

  private def bind(
      host: String,
      port: Int,
      group: EventLoopGroup,
      channelClass: Class[? <: ServerChannel],
      connections: DefaultChannelGroup
  ): Channel =
    val websocket = WebSocketServerProtocolConfig
      .newBuilder()
      .websocketPath(Routes.ConnectPath)
      .checkStartsWith(true) // "/connect?..." too (Routes has already checked the path itself)
      .handshakeTimeoutMillis(10000)
      .maxFramePayloadLength(Limits.MaxMessageBytes) // a bigger frame: close 1009
      .expectMaskedFrames(true)
      .allowMaskMismatch(false) // an unmasked client frame: close 1002
      .allowExtensions(false) // no permessage-deflate; RSV bits set: close 1002
      .closeOnProtocolViolation(true)
      .withUTF8Validator(false) // Utf8Text does it (invalid UTF-8 in a text message: close 1007)
      .dropPongFrames(true)
      .handleCloseFrames(false) // Echo answers a close itself (1000 when it had no status)
      .sendCloseFrame(null) // closing the channel sends nothing more (Main sends 1001 on shutdown)
      .build()
    val routes = new Routes
    val echo = new Echo
    val silenceSeconds = Limits.SilenceTimeout.toSeconds
    val pingSeconds = Limits.PingEvery.toSeconds
    new ServerBootstrap()
      .group(group)
      .channel(channelClass)
      .option(ChannelOption.SO_BACKLOG, Integer.valueOf(4096))
      .option(ChannelOption.SO_REUSEADDR, java.lang.Boolean.TRUE)
      .childOption(ChannelOption.TCP_NODELAY, java.lang.Boolean.TRUE)
      .childHandler(new ChannelInitializer[SocketChannel]:
        override def initChannel(ch: SocketChannel): Unit =
          connections.add(ch)
          ch.pipeline
            // reader idle 15 s: close; all idle 5 s: ping (Echo), before the upgrade only the close (Routes)
            .addLast(new IdleStateHandler(silenceSeconds, 0, pingSeconds, TimeUnit.SECONDS))
            .addLast(new HttpServerCodec()) // replaced by the WebSocket decoder and encoder on upgrade
            .addLast(new HttpObjectAggregator(Limits.MaxHttpBodyBytes)) // removed on upgrade
            .addLast(routes) // leaves on upgrade
            .addLast(new WebSocketServerProtocolHandler(websocket)) // adds the handshake handler before itself
            .addLast(new Utf8Text)
            .addLast(new Messages(Limits.MaxMessageBytes))
            .addLast(echo)
      )
      .bind(host, port)
      .sync()
      .channel
