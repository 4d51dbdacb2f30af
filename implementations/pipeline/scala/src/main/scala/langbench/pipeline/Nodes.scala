package langbench.pipeline

import com.google.protobuf.UnsafeByteOperations
import io.grpc.{Server, ServerInterceptors}
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder
import io.grpc.netty.shaded.io.netty.bootstrap.ServerBootstrap
import io.grpc.netty.shaded.io.netty.channel.{Channel, ChannelInitializer, ChannelOption}
import io.grpc.netty.shaded.io.netty.handler.codec.http.{HttpDecoderConfig, HttpServerCodec}
import langbench.pipeline.proto.Op

import java.net.InetSocketAddress
import java.util.concurrent.{ConcurrentHashMap, TimeUnit}
import java.util.concurrent.atomic.AtomicInteger

/** One role of the pipeline. `stop` runs on the main thread after SIGTERM/SIGINT. */
trait Node:
  def start(): Unit
  def describe: String
  def stop(signalAt: Long): Unit

object Node:
  def ms(n: Long): Long = TimeUnit.MILLISECONDS.toNanos(n)

  def sleepUntil(deadline: Long, done: () => Boolean): Unit =
    while !done() && System.nanoTime() < deadline do Thread.sleep(2)

/** Node a: HTTP/1.1 in, one [[Lane]] to B per event loop. */
final class Front(cfg: Config, transport: Transport) extends Node:
  val budget = new Budget(cfg.maxInflight)
  val maxPayload: Int = cfg.maxPayload
  @volatile var stopping = false
  val conns: java.util.Set[Conn] = ConcurrentHashMap.newKeySet[Conn]()
  private val lanes: IndexedSeq[Lane] =
    transport.loops.indices.map(i => new Lane(i, transport.loops(i), cfg.next, transport.clientChannel, cfg.rounds, "b"))
  private var listener: Channel = scala.compiletime.uninitialized

  override def start(): Unit =
    lanes.foreach(_.start())
    val decoder = new HttpDecoderConfig()
      .setMaxInitialLineLength(8 * 1024)
      .setMaxHeaderSize(16 * 1024)
      .setMaxChunkSize(64 * 1024)
    listener = new ServerBootstrap()
      .group(transport.group)
      .channel(transport.serverChannel)
      .option(ChannelOption.SO_BACKLOG, Integer.valueOf(4096))
      .option(ChannelOption.SO_REUSEADDR, java.lang.Boolean.TRUE)
      .childOption(ChannelOption.TCP_NODELAY, java.lang.Boolean.TRUE)
      .childHandler(new ChannelInitializer[Channel]:
        override def initChannel(ch: Channel): Unit =
          // Runs on the connection's loop: the connection uses that loop's lane.
          val i = transport.indexOfCurrent()
          ch.pipeline.addLast(new HttpServerCodec(decoder)).addLast(new Conn(Front.this, lanes(if i >= 0 then i else 0)))
          ()
      )
      .bind(cfg.host, cfg.port)
      .sync()
      .channel

  override def describe: String = s"HTTP/1.1, next ${cfg.next} over ${lanes.size} stream(s)"

  /** On the connection's loop: dA, then down the lane (the same loop, unless start-up placed it elsewhere). */
  def forward(lane: Lane, slot: Slot, id: String, body: Array[Byte]): Unit =
    if lane.loop.inEventLoop() then send(lane, slot, id, body)
    else lane.loop.execute(() => send(lane, slot, id, body))

  private def send(lane: Lane, slot: Slot, id: String, body: Array[Byte]): Unit =
    val d = lane.hasher.entry(id, body)
    val op = Op.newBuilder().setId(id).setPayload(UnsafeByteOperations.unsafeWrap(body)).setDigest(UnsafeByteOperations.unsafeWrap(d)).build()
    lane.submit(id, op, slot)

  /** No new connections or requests (503); up to ~4 s for the operations held; 503 for the rest. */
  override def stop(signalAt: Long): Unit =
    stopping = true
    listener.close().awaitUninterruptibly(500)
    Node.sleepUntil(signalAt + Node.ms(Front.DrainMs), () => budget.inUse == 0)
    val left = budget.inUse
    if left > 0 then Log.warn(s"$left operations not acknowledged in time: answered 503")
    conns.forEach(_.abort())
    Node.sleepUntil(System.nanoTime() + Node.ms(300), () => conns.isEmpty)
    lanes.foreach(_.stop())
    transport.shutdown()

object Front:
  private val DrainMs = 3900L

/** B and C: the Stage service; what happens to an operation is theirs. */
abstract class StageNode(cfg: Config, transport: Transport) extends Node, Stage:
  override val budget = new Budget(cfg.maxInflight)
  override val held = new AtomicInteger
  override val streams: java.util.Set[Upstream] = ConcurrentHashMap.newKeySet[Upstream]()
  private var server: Server = scala.compiletime.uninitialized

  override def start(): Unit =
    server = NettyServerBuilder
      .forAddress(new InetSocketAddress(cfg.host, cfg.port))
      .channelType(transport.serverChannel)
      .bossEventLoopGroup(transport.group)
      .workerEventLoopGroup(transport.group)
      // Handlers run on the connection's event loop: they hash (CPU only) and hand over, never block.
      .directExecutor()
      // Peers of other languages may ping; grpc-java's default (no pings under 5 min) would end their connections.
      .permitKeepAliveTime(1, TimeUnit.SECONDS)
      .permitKeepAliveWithoutCalls(true)
      .addService(ServerInterceptors.intercept(new StageService(this, transport), new EagerHeaders))
      .build()
      .start()

  /** Stop reading, let what is held be acknowledged (up to ~3 s), end the streams. */
  override def stop(signalAt: Long): Unit =
    budget.close()
    server.shutdown()
    Node.sleepUntil(signalAt + Node.ms(StageNode.DrainMs), () => held.get == 0)
    val left = held.get
    if left > 0 then Log.warn(s"$left operations not acknowledged in time: left to the sender to send again")
    streams.forEach(_.end())
    if !server.awaitTermination(300, TimeUnit.MILLISECONDS) then server.shutdownNow()
    afterStreams()
    transport.shutdown()

  protected def afterStreams(): Unit

object StageNode:
  private val DrainMs = 3000L

/** Node b: dB = T(dA), then down its loop's lane to C; C's acknowledgement is relayed up the stream it came on. */
final class RelayNode(cfg: Config, transport: Transport) extends StageNode(cfg, transport):
  private val lanes: IndexedSeq[Lane] =
    transport.loops.indices.map(i => new Lane(i, transport.loops(i), cfg.next, transport.clientChannel, cfg.rounds, "c"))

  override def start(): Unit =
    lanes.foreach(_.start())
    super.start()

  override def describe: String = s"gRPC Stage, next ${cfg.next} over ${lanes.size} stream(s)"

  override def accept(op: Op, from: Upstream): Unit =
    val lane = lanes(from.slot)
    val d = lane.hasher.chain(op.getDigest)
    val next = Op.newBuilder().setId(op.getId).setPayload(op.getPayload).setDigest(UnsafeByteOperations.unsafeWrap(d)).build()
    lane.submit(op.getId, next, from)

  override protected def afterStreams(): Unit = lanes.foreach(_.stop())

/** Node c: dC = T(dB), then the ledger (group commit), then the acknowledgement. */
final class CommitNode(cfg: Config, transport: Transport) extends StageNode(cfg, transport):
  private val path = cfg.ledger.getOrElse(throw new IllegalArgumentException("LEDGER_FILE is not set"))
  private val ledger = new Ledger(path)
  private val hashers: IndexedSeq[Hasher] = transport.loops.map(_ => new Hasher(cfg.rounds))
  private var recovered = 0

  override def start(): Unit =
    recovered = ledger.open()
    super.start()

  override def describe: String = s"gRPC Stage, ledger $path ($recovered ids committed before)"

  override def accept(op: Op, from: Upstream): Unit =
    ledger.submit(new Commit(op.getId, hashers(from.slot).chain(op.getDigest), from))

  override protected def afterStreams(): Unit = ledger.close(500)
