package langbench.notes

import io.grpc.Server
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder
import io.grpc.netty.shaded.io.netty.channel.{EventLoopGroup, IoHandlerFactory, MultiThreadIoEventLoopGroup, ServerChannel}
import io.grpc.netty.shaded.io.netty.channel.epoll.{Epoll, EpollIoHandler, EpollServerSocketChannel}
import io.grpc.netty.shaded.io.netty.channel.nio.NioIoHandler
import io.grpc.netty.shaded.io.netty.channel.socket.nio.NioServerSocketChannel
import io.grpc.netty.shaded.io.netty.util.concurrent.DefaultThreadFactory
import sun.misc.Signal

import java.net.InetSocketAddress
import java.nio.file.Paths
import java.util.concurrent.{CountDownLatch, TimeUnit}
import java.util.logging.{Level, Logger}
import scala.util.control.NonFatal

/** gRPC noticeboard server.
  *
  * Environment: HOST (default 127.0.0.1), PORT (default 50051), NOTES_FILE (required),
  * LANGBENCH_CPUS (default: the CPUs the JVM sees). Stops gracefully on SIGTERM/SIGINT.
  */
object NotesServer {
  private val log = Logger.getLogger("langbench.notes.server")

  /** In-flight calls get this long to finish before the server cancels them. */
  private val GraceSeconds = 2L

  def main(args: Array[String]): Unit =
    try run()
    catch {
      case NonFatal(e) =>
        log.log(Level.SEVERE, s"server failed: ${e.getMessage}", e)
        sys.exit(1)
    }

  private def run(): Unit = {
    val host = sys.env.getOrElse("HOST", "127.0.0.1")
    val port = sys.env.get("PORT").map(_.trim.toInt).getOrElse(50051)
    val notesFile = sys.env.getOrElse("NOTES_FILE", throw new IllegalArgumentException("NOTES_FILE is not set"))
    val cpus = sys.env
      .get("LANGBENCH_CPUS")
      .flatMap(_.trim.toIntOption)
      .filter(_ > 0)
      .getOrElse(Runtime.getRuntime.availableProcessors())

    val started = System.nanoTime()
    val store = NotesStore.load(Paths.get(notesFile))

    // Register the handlers before binding, so a signal that arrives during start-up is not lost.
    val stop = new CountDownLatch(1)
    Seq("TERM", "INT").foreach(name => Signal.handle(new Signal(name), _ => stop.countDown()))

    val transport = Transport(cpus)
    val server: Server = NettyServerBuilder
      .forAddress(new InetSocketAddress(host, port))
      .channelType(transport.channelType)
      .bossEventLoopGroup(transport.boss)
      .workerEventLoopGroup(transport.workers)
      // Handlers only read immutable in-memory maps and never block: run them on the event loop.
      .directExecutor()
      .addService(new NoticeboardService(store))
      .build()
      .start()

    log.info(
      f"listening on $host:$port (${store.size} notes, ${transport.name} transport, $cpus event-loop threads, " +
        f"ready in ${(System.nanoTime() - started) / 1e6}%.0f ms)"
    )

    stop.await()
    log.info("stopping")
    server.shutdown()
    if (!server.awaitTermination(GraceSeconds, TimeUnit.SECONDS)) {
      server.shutdownNow()
      server.awaitTermination(1, TimeUnit.SECONDS)
    }
    transport.shutdown()
    log.info("stopped")
  }

  /** Netty event loops sized to the CPUs given: one acceptor thread, `cpus` I/O threads. */
  private final case class Transport(
      name: String,
      boss: EventLoopGroup,
      workers: EventLoopGroup,
      channelType: Class[? <: ServerChannel]
  ) {
    def shutdown(): Unit = {
      val futures = Seq(boss, workers).map(_.shutdownGracefully(0, 500, TimeUnit.MILLISECONDS))
      val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(1)
      futures.foreach(f => f.awaitUninterruptibly(math.max(0L, deadline - System.nanoTime()), TimeUnit.NANOSECONDS))
    }
  }

  private object Transport {
    def apply(cpus: Int): Transport = {
      val (name, factory, channel): (String, () => IoHandlerFactory, Class[? <: ServerChannel]) =
        if (Epoll.isAvailable) ("epoll", () => EpollIoHandler.newFactory(), classOf[EpollServerSocketChannel])
        else ("nio", () => NioIoHandler.newFactory(), classOf[NioServerSocketChannel])
      Transport(
        name,
        new MultiThreadIoEventLoopGroup(1, new DefaultThreadFactory("grpc-boss", true), factory()),
        new MultiThreadIoEventLoopGroup(cpus, new DefaultThreadFactory("grpc-worker", true), factory()),
        channel
      )
    }
  }
}
