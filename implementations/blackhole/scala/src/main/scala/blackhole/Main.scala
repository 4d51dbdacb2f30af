package blackhole

import io.netty.bootstrap.ServerBootstrap
import io.netty.channel.epoll.{Epoll, EpollEventLoopGroup, EpollServerSocketChannel}
import io.netty.channel.group.DefaultChannelGroup
import io.netty.channel.nio.NioEventLoopGroup
import io.netty.channel.socket.SocketChannel
import io.netty.channel.socket.nio.NioServerSocketChannel
import io.netty.channel.{Channel, ChannelInitializer, ChannelOption, EventLoopGroup, ServerChannel}
import io.netty.handler.codec.http.{HttpDecoderConfig, HttpServerCodec}
import io.netty.util.concurrent.{DefaultThreadFactory, GlobalEventExecutor}
import sun.misc.Signal

import java.nio.file.Files
import java.util.concurrent.{CountDownLatch, TimeUnit}

/** blackhole: answers 200 to any HTTP request and records every request, LZ4-compressed, to disk.
  *
  * Environment: HOST, PORT, LANGBENCH_CPUS, RECORD, BLACKHOLE_DIR (else LANGBENCH_INSTANCE_DIR,
  * else ./recordings), BLACKHOLE_ROTATE_BYTES, BLACKHOLE_ROTATE_SECONDS. On SIGTERM/SIGINT: stop
  * accepting, give requests in flight up to 2 s, close the connections, write everything queued,
  * close and rename every file, exit 0.
  */
object Main:
  private val InFlightGraceMs = 2000L
  private val StopBudgetMs = 4500L // SIGTERM to exit, within the harness's 5 s

  def main(args: Array[String]): Unit =
    val started = System.nanoTime()
    val startMillis = System.currentTimeMillis()
    val stop = new CountDownLatch(1)
    @volatile var signal = ""
    List("TERM", "INT").foreach(name => Signal.handle(new Signal(name), s => { signal = s.getName; stop.countDown() }))

    val cfg = Config.fromEnv(sys.env) match
      case Right(c) => c
      case Left(err) =>
        Log.error(err)
        sys.exit(2)

    val pid = ProcessHandle.current.pid
    val recorders =
      if !cfg.record then Array.empty[Recorder]
      else
        try Files.createDirectories(cfg.dir)
        catch
          case e: Exception =>
            Log.error(s"cannot create the output folder ${cfg.dir}", e)
            sys.exit(1)
        val (compressor, hash, codecName) = Recorder.codec()
        Log.info(s"recording to ${cfg.dir.toAbsolutePath}: ${cfg.writers} writer(s), LZ4 frames of ${Recorder.BlockSize} independent blocks, content checksum, $codecName; " +
          s"queue of ${cfg.queueRecords} records / ${cfg.queueBytes} bytes per writer; rotation at ${cfg.rotateBytes} bytes or ${cfg.rotateNanos / 1e9} s")
        Array.tabulate(cfg.writers)(i =>
          new Recorder(i, cfg.dir, s"bh-$startMillis-$pid", cfg.rotateBytes, cfg.rotateNanos, cfg.queueRecords, cfg.queueBytes, compressor, hash)
        )
    recorders.foreach(_.start())
    val shared = new Shared(recorders, new IdSource(startMillis, pid))

    val (group, channelClass) = eventLoops(cfg.cpus)
    val connections = new DefaultChannelGroup("connections", GlobalEventExecutor.INSTANCE)
    val server =
      try bind(cfg, group, channelClass, shared, connections)
      catch
        case e: Exception =>
          Log.error(s"cannot listen on ${cfg.host}:${cfg.port}", e)
          sys.exit(1)
    Log.info(
      s"listening on ${cfg.host}:${cfg.port} (${channelClass.getSimpleName}), ${cfg.cpus} CPUs, RECORD=${if cfg.record then 1 else 0}, " +
        s"ready in ${(System.nanoTime() - started) / 1000000} ms"
    )

    stop.await()
    val stopAt = System.nanoTime()
    def left(): Long = StopBudgetMs - (System.nanoTime() - stopAt) / 1000000
    Log.info(s"SIG$signal: stopping")
    server.close().awaitUninterruptibly(500) // no new connections
    val graceUntil = System.nanoTime() + InFlightGraceMs * 1000000
    while shared.inFlight.get > 0 && System.nanoTime() < graceUntil do Thread.sleep(5)
    if shared.inFlight.get > 0 then Log.warn(s"${shared.inFlight.get} requests still in flight after ${InFlightGraceMs} ms: dropped (not answered, not recorded)")
    connections.close().awaitUninterruptibly(math.max(100, left() / 4))
    group.shutdownGracefully(0, 200, TimeUnit.MILLISECONDS).awaitUninterruptibly(math.max(100, left() / 3))
    // The event loops are gone: nothing is queued any more. Write the rest, close and rename the files.
    var clean = true
    recorders.foreach(r => if !r.stop(math.max(100, left())) then clean = false)
    recorders.foreach(r => Log.info(r.stats))
    if !clean then
      Log.error("a writer did not finish in time")
      Runtime.getRuntime.halt(1)
    Log.info(s"stopped in ${(System.nanoTime() - stopAt) / 1000000} ms")
    System.exit(0)

  /** LANGBENCH_CPUS event-loop threads (native epoll where available) run accept, HTTP and encoding. */
  private def eventLoops(cpus: Int): (EventLoopGroup, Class[? <: ServerChannel]) =
    val threads = new DefaultThreadFactory("http", true)
    if Epoll.isAvailable then (new EpollEventLoopGroup(cpus, threads), classOf[EpollServerSocketChannel])
    else (new NioEventLoopGroup(cpus, threads), classOf[NioServerSocketChannel])

  private def bind(
      cfg: Config,
      group: EventLoopGroup,
      channelClass: Class[? <: ServerChannel],
      shared: Shared,
      connections: DefaultChannelGroup
  ): Channel =
    val decoder = new HttpDecoderConfig()
      .setMaxInitialLineLength(16 * 1024)
      .setMaxHeaderSize(64 * 1024)
      .setMaxChunkSize(64 * 1024)
    new ServerBootstrap()
      .group(group)
      .channel(channelClass)
      .option(ChannelOption.SO_BACKLOG, Integer.valueOf(1024))
      .option(ChannelOption.SO_REUSEADDR, java.lang.Boolean.TRUE)
      .childOption(ChannelOption.TCP_NODELAY, java.lang.Boolean.TRUE)
      .childHandler(new ChannelInitializer[SocketChannel]:
        override def initChannel(ch: SocketChannel): Unit =
          connections.add(ch)
          ch.pipeline
            .addLast(new HttpServerCodec(decoder))
            .addLast(new RecordHandler(shared))
      )
      .bind(cfg.host, cfg.port)
      .sync()
      .channel
