package langbench.events

import io.netty.bootstrap.ServerBootstrap
import io.netty.channel.epoll.{Epoll, EpollEventLoopGroup, EpollServerSocketChannel}
import io.netty.channel.nio.NioEventLoopGroup
import io.netty.channel.socket.SocketChannel
import io.netty.channel.socket.nio.NioServerSocketChannel
import io.netty.channel.{Channel, ChannelInitializer, ChannelOption, EventLoopGroup, ServerChannel}
import io.netty.handler.codec.http.{HttpObjectAggregator, HttpServerCodec, HttpServerExpectContinueHandler}
import io.netty.handler.timeout.IdleStateHandler
import io.netty.util.concurrent.DefaultThreadFactory
import org.apache.kafka.clients.producer.{KafkaProducer, ProducerConfig}
import org.apache.kafka.common.serialization.{ByteArraySerializer, StringSerializer}
import org.slf4j.LoggerFactory
import sun.misc.Signal

import java.time.Duration as JDuration
import java.util.Properties
import java.util.concurrent.{CountDownLatch, TimeUnit}
import scala.concurrent.duration.*

/** events-kafka service: Netty HTTP/1.1 server, Apache kafka-clients producer.
  *
  * Environment: HOST, PORT, KAFKA_BOOTSTRAP, KAFKA_TOPIC, LANGBENCH_CPUS. Start-up does not need
  * the broker. On SIGTERM/SIGINT: stop accepting, let in-flight requests get their answers, flush
  * and close the producer, exit 0.
  */
object Main:

  // Producer settings of the contract (see langbench.toml [tuning]).
  private val Linger = 0.millis // send at once; records arriving meanwhile form the next batch
  private val DeliveryTimeout = 5.seconds // no acknowledgement by then: the callback fails the record, 503
  private val RequestTimeout = DeliveryTimeout - Linger // largest allowed: a stalled request is never re-sent inside the window
  private val MaxBlock = 1.second // send() waiting for metadata (broker unreachable, topic unknown)
  private val HandoffBudget = 500.millis // a request not handed to the producer by then is answered 503 unsent

  private val MaxBodyBytes = 64 * 1024
  private val IdleTimeout = 60.seconds
  private val ShutdownDrain = 2.seconds // in-flight requests get this long on SIGTERM
  private val ProducerCloseTimeout = 2.seconds // then the producer flushes for at most this long

  private val log = LoggerFactory.getLogger("langbench.events")

  def main(args: Array[String]): Unit =
    val started = System.nanoTime()
    val stop = new CountDownLatch(1)
    @volatile var signal = ""
    List("TERM", "INT").foreach(name => Signal.handle(new Signal(name), s => { signal = s.getName; stop.countDown() }))

    val cfg = Config.fromEnv(sys.env) match
      case Right(c) => c
      case Left(err) =>
        log.error(err)
        sys.exit(2)

    val producer = new KafkaProducer[String, Array[Byte]](producerProperties(cfg), new StringSerializer, new ByteArraySerializer)
    val publisher = new EventPublisher(producer, cfg.topic, HandoffBudget)
    val (group, channelClass) = eventLoops(cfg.cpus)
    val server =
      try bind(cfg, group, channelClass, publisher)
      catch
        case e: Exception =>
          log.error(s"cannot listen on ${cfg.host}:${cfg.port}", e)
          producer.close(JDuration.ZERO)
          sys.exit(1)
    log.info(
      s"listening on ${cfg.host}:${cfg.port} (${channelClass.getSimpleName}), topic ${cfg.topic} at ${cfg.bootstrapServers}, " +
        s"${cfg.cpus} CPUs, ready in ${(System.nanoTime() - started) / 1000000} ms"
    )

    stop.await()
    log.info(s"SIG$signal: stopping")
    server.close().awaitUninterruptibly() // no new connections
    val drainUntil = System.nanoTime() + ShutdownDrain.toNanos
    while publisher.pending > 0 && System.nanoTime() < drainUntil do Thread.sleep(10)
    publisher.stopAccepting()
    producer.close(JDuration.ofMillis(ProducerCloseTimeout.toMillis)) // flushes what is still buffered
    group.shutdownGracefully(0, 500, TimeUnit.MILLISECONDS).awaitUninterruptibly(1, TimeUnit.SECONDS)
    log.info("stopped")
    System.exit(0)

  /** LANGBENCH_CPUS event-loop threads (native epoll where available) run accept and connections. */
  private def eventLoops(cpus: Int): (EventLoopGroup, Class[? <: ServerChannel]) =
    val threads = new DefaultThreadFactory("http", true)
    if Epoll.isAvailable then (new EpollEventLoopGroup(cpus, threads), classOf[EpollServerSocketChannel])
    else (new NioEventLoopGroup(cpus, threads), classOf[NioServerSocketChannel])

  private def bind(cfg: Config, group: EventLoopGroup, channelClass: Class[? <: ServerChannel], publisher: EventPublisher): Channel =
    new ServerBootstrap()
      .group(group)
      .channel(channelClass)
      .option(ChannelOption.SO_BACKLOG, Integer.valueOf(1024))
      .childOption(ChannelOption.TCP_NODELAY, java.lang.Boolean.TRUE)
      .childHandler(new ChannelInitializer[SocketChannel]:
        override def initChannel(ch: SocketChannel): Unit =
          ch.pipeline
            .addLast(new IdleStateHandler(0, 0, IdleTimeout.toSeconds.toInt))
            .addLast(new HttpServerCodec)
            .addLast(new HttpServerExpectContinueHandler)
            .addLast(new HttpObjectAggregator(MaxBodyBytes)) // 413 above
            .addLast(new FireHandler(publisher))
      )
      .bind(cfg.host, cfg.port)
      .sync()
      .channel

  private def producerProperties(cfg: Config): Properties =
    val p = new Properties
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, cfg.bootstrapServers)
    p.put(ProducerConfig.CLIENT_ID_CONFIG, "events-kafka-scala")
    p.put(ProducerConfig.ACKS_CONFIG, "1")
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false")
    p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "none")
    p.put(ProducerConfig.LINGER_MS_CONFIG, Linger.toMillis.toString)
    p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, DeliveryTimeout.toMillis.toString)
    p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, RequestTimeout.toMillis.toString)
    p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, MaxBlock.toMillis.toString)
    p
