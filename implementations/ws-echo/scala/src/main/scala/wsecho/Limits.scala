package wsecho

import scala.concurrent.duration.*

/** The contract's limits (scenarios/ws-echo/README.md): not settings. */
object Limits:
  /** Largest message (and so largest frame) echoed; one byte more closes with 1009. */
  val MaxMessageBytes: Int = 1 << 20
  /** A ping when nothing was read or written for this long. */
  val PingEvery: FiniteDuration = 5.seconds
  /** Nothing read for this long (a pong counts): the connection is closed. Before the upgrade, the
    * same bound is the HTTP idle timeout. */
  val SilenceTimeout: FiniteDuration = 15.seconds
  /** The request head of the upgrade or of a plain request, and a body that nobody needs. */
  val MaxHttpBodyBytes: Int = 8 * 1024
