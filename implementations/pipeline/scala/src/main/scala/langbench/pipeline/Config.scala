package langbench.pipeline

import java.nio.file.{Path, Paths}

/** Which part of the pipeline this process plays (LANGBENCH_NODE). */
enum Role:
  case A, B, C

/** The node's settings, read from the environment (scenarios/pipeline/README.md). */
final case class Config(
    role: Role,
    host: String,
    port: Int,
    next: String, // A and B: host:port of the next node; C: empty
    rounds: Int,
    maxInflight: Int,
    maxPayload: Int,
    ledger: Option[Path], // C only
    cpus: Int
)

object Config:
  private def nextOf(role: Role, value: Option[String]): Either[String, String] =
    if role == Role.C then Right("")
    else value.toRight("NEXT is not set (host:port of the next node)")

  private def ledgerOf(role: Role, value: Option[String]): Either[String, Option[Path]] =
    if role != Role.C then Right(None)
    else value.map(p => Paths.get(p)).toRight("LEDGER_FILE is not set").map(Some(_))

  def fromEnv(env: Map[String, String]): Either[String, Config] =
    def get(name: String): Option[String] = env.get(name).map(_.trim).filter(_.nonEmpty)
    def int(name: String, default: Int, min: Int): Either[String, Int] =
      get(name) match
        case None    => Right(default)
        case Some(v) => v.toIntOption.filter(_ >= min).toRight(s"$name must be an integer >= $min, not '$v'")

    for
      role <- get("LANGBENCH_NODE").map(_.toLowerCase) match
        case Some("a") => Right(Role.A)
        case Some("b") => Right(Role.B)
        case Some("c") => Right(Role.C)
        case other     => Left(s"LANGBENCH_NODE must be a, b or c, not '${other.getOrElse("")}'")
      port <- int("PORT", 8080, 1).filterOrElse(_ < 65536, "PORT is not a valid port")
      rounds <- int("ROUNDS", 100, 1)
      maxInflight <- int("MAX_INFLIGHT", 2000, 1)
      maxPayload <- int("MAX_PAYLOAD", 65536, 0)
      next <- nextOf(role, get("NEXT"))
      ledger <- ledgerOf(role, get("LEDGER_FILE"))
    yield Config(
      role = role,
      host = get("HOST").getOrElse("127.0.0.1"),
      port = port,
      next = next,
      rounds = rounds,
      maxInflight = maxInflight,
      maxPayload = maxPayload,
      ledger = ledger,
      cpus = get("LANGBENCH_CPUS").flatMap(_.toIntOption).filter(_ > 0).getOrElse(Runtime.getRuntime.availableProcessors())
    )
