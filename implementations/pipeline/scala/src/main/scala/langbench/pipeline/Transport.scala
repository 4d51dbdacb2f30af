package langbench.pipeline

import io.grpc.netty.shaded.io.netty.channel.{Channel, EventLoop, EventLoopGroup, MultiThreadIoEventLoopGroup, ServerChannel}
import io.grpc.netty.shaded.io.netty.channel.epoll.{Epoll, EpollIoHandler, EpollServerSocketChannel, EpollSocketChannel}
import io.grpc.netty.shaded.io.netty.channel.nio.NioIoHandler
import io.grpc.netty.shaded.io.netty.channel.socket.nio.{NioServerSocketChannel, NioSocketChannel}
import io.grpc.netty.shaded.io.netty.util.concurrent.DefaultThreadFactory

import java.util.concurrent.TimeUnit
import scala.jdk.CollectionConverters.*

/** The node's event loops: LANGBENCH_CPUS threads (native epoll, NIO fallback) of grpc's shaded
  * Netty. They run everything on the request path: accept, HTTP (node a), the gRPC server
  * transports and handlers (direct executor), the gRPC client channel of each loop, the hashing.
  */
final class Transport private (
    val name: String,
    val group: EventLoopGroup,
    val loops: IndexedSeq[EventLoop],
    val serverChannel: Class[? <: ServerChannel],
    val clientChannel: Class[? <: Channel]
):
  /** The index of the loop running the calling thread, -1 when it is no loop of ours. */
  def indexOfCurrent(): Int =
    var i = 0
    while i < loops.length && !loops(i).inEventLoop() do i += 1
    if i < loops.length then i else -1

  def shutdown(): Unit =
    group.shutdownGracefully(0, 200, TimeUnit.MILLISECONDS).awaitUninterruptibly(1000)
    ()

object Transport:
  def apply(threads: Int): Transport =
    val factory = new DefaultThreadFactory("loop", true)
    if Epoll.isAvailable then
      build("epoll", new MultiThreadIoEventLoopGroup(threads, factory, EpollIoHandler.newFactory()), classOf[EpollServerSocketChannel], classOf[EpollSocketChannel])
    else
      build("nio", new MultiThreadIoEventLoopGroup(threads, factory, NioIoHandler.newFactory()), classOf[NioServerSocketChannel], classOf[NioSocketChannel])

  private def build(name: String, group: EventLoopGroup, server: Class[? <: ServerChannel], client: Class[? <: Channel]): Transport =
    val loops = group.iterator().asScala.map(_.asInstanceOf[EventLoop]).toIndexedSeq
    new Transport(name, group, loops, server, client)
