package langbench.events

import com.comcast.ip4s.{Host, Port}

/** Settings read from the environment (see the scenario's README). */
final case class Config(
    host: Host,
    port: Port,
    bootstrapServers: String,
    topic: String,
    cpus: Int
)

object Config {

  def fromEnv(env: Map[String, String]): Either[String, Config] = {
    def get(name: String, default: String): String =
      env.get(name).map(_.trim).filter(_.nonEmpty).getOrElse(default)

    for {
      host <- Host.fromString(get("HOST", "127.0.0.1")).toRight(s"HOST is not a valid host: ${get("HOST", "")}")
      port <- get("PORT", "8080").toIntOption.flatMap(Port.fromInt).toRight(s"PORT is not a valid port: ${get("PORT", "")}")
      cpus = get("LANGBENCH_CPUS", "").toIntOption.filter(_ > 0).getOrElse(Runtime.getRuntime.availableProcessors())
    } yield Config(
      host = host,
      port = port,
      bootstrapServers = get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
      topic = get("KAFKA_TOPIC", "testing-topic"),
      cpus = cpus
    )
  }
}
