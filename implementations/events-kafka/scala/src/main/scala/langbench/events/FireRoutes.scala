package langbench.events

import cats.effect.IO
import fs2.kafka.KafkaProducer
import org.http4s.{HttpRoutes, Method, Request, Response}
import org.http4s.dsl.Http4sDsl
import org.http4s.headers.Allow
import org.typelevel.log4cats.Logger

import scala.concurrent.duration.FiniteDuration

/** `POST /fire/{id}`: validates the request, produces the event and answers 200 once the broker
  * acknowledged it; 503 if it did not (the producer's delivery timeout bounds the wait).
  */
final class FireRoutes(
    producer: KafkaProducer[IO, String, Array[Byte]],
    topic: String,
    ackDeadline: FiniteDuration,
    maxBodyBytes: Int,
    log: Logger[IO]
) extends Http4sDsl[IO] {

  val routes: HttpRoutes[IO] = HttpRoutes.of[IO] {
    case req @ POST -> Root / "fire" / segment =>
      Fire.parseId(segment) match {
        case None => NotFound()
        case Some(id) =>
          readBody(req).flatMap {
            case None => PayloadTooLarge()
            case Some(body) =>
              Fire.parseReason(body) match {
                case None         => BadRequest()
                case Some(reason) => fire(id, Fire.event(id, reason))
              }
          }
      }
    case _ -> Root / "fire" / _ =>
      MethodNotAllowed(Allow(Method.POST))
  }

  /** The body, or None if it is longer than `maxBodyBytes`. */
  private def readBody(req: Request[IO]): IO[Option[Array[Byte]]] =
    if (req.contentLength.exists(_ > maxBodyBytes)) IO.pure(None)
    else
      req.body.take(maxBodyBytes.toLong + 1).compile.to(Array).map { bytes =>
        if (bytes.length > maxBodyBytes) None else Some(bytes)
      }

  private def fire(key: String, value: Array[Byte]): IO[Response[IO]] =
    producer
      .produceOne_(topic, key, value) // enqueue (bounded by max.block.ms) ...
      .flatten //                        ... then wait for the broker's acknowledgement
      .timeout(ackDeadline) //           backstop only: delivery.timeout.ms fails the send first
      .attempt
      .flatMap {
        case Right(_) => Ok()
        case Left(e)  => log.debug(e)("produce failed") *> ServiceUnavailable()
      }
}
