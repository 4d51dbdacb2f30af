package langbench.events

/** Settings read from the environment (see the scenario's README). */
final case class Config(host: String, port: Int, bootstrapServers: String, topic: String, cpus: Int)

object Config:

  def fromEnv(env: Map[String, String]): Either[String, Config] =
    def get(name: String, default: String): String =
      env.get(name).map(_.trim).filter(_.nonEmpty).getOrElse(default)

    val port = get("PORT", "8080")
    port.toIntOption.filter(p => p > 0 && p < 65536) match
      case None => Left(s"PORT is not a valid port: $port")
      case Some(p) =>
        Right(
          Config(
            host = get("HOST", "127.0.0.1"),
            port = p,
            bootstrapServers = get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            topic = get("KAFKA_TOPIC", "testing-topic"),
            cpus = get("LANGBENCH_CPUS", "").toIntOption.filter(_ > 0).getOrElse(Runtime.getRuntime.availableProcessors())
          )
        )
