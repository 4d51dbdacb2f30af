package langbench.events

import cats.effect.{ExitCode, IO, IOApp, Resource}
import fs2.kafka.{Acks, KafkaProducer, ProducerSettings, Serializer}
import org.apache.kafka.clients.producer.ProducerConfig
import org.http4s.ember.server.EmberServerBuilder
import org.typelevel.log4cats.LoggerFactory
import org.typelevel.log4cats.slf4j.Slf4jFactory
import sun.misc.Signal

import java.nio.charset.StandardCharsets
import scala.concurrent.Promise
import scala.concurrent.duration._

/** events-kafka service: http4s on Ember, fs2-kafka producer, cats-effect 3 runtime.
  *
  * Environment: HOST, PORT, KAFKA_BOOTSTRAP, KAFKA_TOPIC, LANGBENCH_CPUS. Start-up does not need
  * the broker. On SIGTERM/SIGINT: stop accepting, let in-flight requests finish, flush and close
  * the producer, exit 0.
  */
object Main extends IOApp {

  // Producer settings of the contract (see langbench.toml [tuning]).
  private val Linger = 5.millis
  private val DeliveryTimeout = 5.seconds // no acknowledgement by then: 503
  private val RequestTimeout = DeliveryTimeout - Linger // largest allowed: a stalled request is not retried in the window
  private val MaxBlock = 1.second // metadata wait in send() when the broker is unreachable
  // Backstop on the HTTP side only; the producer fails a send after MaxBlock + DeliveryTimeout.
  private val AckDeadline = MaxBlock + DeliveryTimeout + 500.millis

  private val ServerShutdownTimeout = 2.seconds // in-flight requests get this long on SIGTERM
  private val ProducerCloseTimeout = 2.seconds // then the producer flushes for at most this long
  private val MaxBodyBytes = 64 * 1024

  implicit private val loggerFactory: LoggerFactory[IO] = Slf4jFactory.create[IO]

  def run(args: List[String]): IO[ExitCode] = {
    val log = loggerFactory.getLoggerFromName("langbench.events")
    for {
      stop <- stopSignal
      started <- IO.monotonic
      cfg <- IO(Config.fromEnv(sys.env)).flatMap(e => IO.fromEither(e.left.map(new IllegalArgumentException(_))))
      code <- service(cfg)
        .use { _ =>
          IO.monotonic.flatMap { now =>
            log.info(
              s"listening on ${cfg.host}:${cfg.port}, topic ${cfg.topic} at ${cfg.bootstrapServers}, " +
                s"${cfg.cpus} CPUs, ready in ${(now - started).toMillis} ms"
            )
          } *> stop.flatMap(sig => log.info(s"SIG$sig: stopping"))
        }
        .as(ExitCode.Success)
        .handleErrorWith(e => log.error(e)("server failed").as(ExitCode.Error))
      _ <- log.info("stopped")
    } yield code
  }

  private def service(cfg: Config): Resource[IO, Unit] =
    for {
      producer <- KafkaProducer.resource(producerSettings(cfg))
      routes = new FireRoutes(producer, cfg.topic, AckDeadline, MaxBodyBytes, loggerFactory.getLoggerFromName("langbench.events.fire"))
      _ <- EmberServerBuilder
        .default[IO]
        .withHost(cfg.host)
        .withPort(cfg.port)
        .withHttpApp(routes.routes.orNotFound)
        .withShutdownTimeout(ServerShutdownTimeout)
        .build
    } yield ()

  private def producerSettings(cfg: Config): ProducerSettings[IO, String, Array[Byte]] =
    ProducerSettings(Serializer.string[IO](StandardCharsets.UTF_8), Serializer.identity[IO])
      .withBootstrapServers(cfg.bootstrapServers)
      .withClientId("events-kafka-scala")
      .withAcks(Acks.One)
      .withEnableIdempotence(false)
      .withLinger(Linger)
      .withDeliveryTimeout(DeliveryTimeout)
      .withRequestTimeout(RequestTimeout)
      .withProperties(
        ProducerConfig.COMPRESSION_TYPE_CONFIG -> "none",
        ProducerConfig.MAX_BLOCK_MS_CONFIG -> MaxBlock.toMillis.toString
      )
      .withCloseTimeout(ProducerCloseTimeout)

  /** Installs SIGTERM/SIGINT handlers now (replacing the JVM's, which would exit 143); the
    * returned IO completes with the name of the first signal received.
    */
  private val stopSignal: IO[IO[String]] = IO {
    val received = Promise[String]()
    List("TERM", "INT").foreach(name => Signal.handle(new Signal(name), s => { received.trySuccess(s.getName); () }))
    IO.fromFuture(IO.pure(received.future))
  }
}
