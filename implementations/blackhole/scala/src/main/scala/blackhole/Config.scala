package blackhole

import java.nio.file.{Path, Paths}

/** The server's settings, read from the environment (the scenario's README, "The server"). */
final case class Config(
    host: String,
    port: Int,
    cpus: Int,
    record: Boolean,
    dir: Path,
    rotateBytes: Long,
    rotateNanos: Long,
    queueRecords: Int,
    queueBytes: Long
):
  /** Writer threads (one file sequence and one queue each): one per four CPUs, at least one. */
  def writers: Int = math.max(1, (cpus + 2) / 4)

object Config:
  val DefaultRotateBytes: Long = 128L << 20
  val DefaultRotateSeconds: Double = 60.0
  /** The hand-off bound, per writer: records and bytes queued (both). */
  val DefaultQueueRecords: Int = 4096
  val DefaultQueueBytes: Long = 8L << 20

  def fromEnv(env: Map[String, String]): Either[String, Config] =
    def get(name: String): Option[String] = env.get(name).map(_.trim).filter(_.nonEmpty)

    for
      port <- get("PORT").getOrElse("8080").toIntOption.filter(p => p > 0 && p < 65536).toRight(s"PORT is not a valid port: ${get("PORT").getOrElse("")}")
      record <- get("RECORD").getOrElse("1") match
        case "1" | "true" | "yes"  => Right(true)
        case "0" | "false" | "no" => Right(false)
        case other                 => Left(s"RECORD must be 0 or 1, not $other")
      rotateBytes <- get("BLACKHOLE_ROTATE_BYTES") match
        case None    => Right(DefaultRotateBytes)
        case Some(v) => v.toLongOption.filter(_ > 0).toRight(s"BLACKHOLE_ROTATE_BYTES must be a positive integer, not $v")
      rotateSeconds <- get("BLACKHOLE_ROTATE_SECONDS") match
        case None    => Right(DefaultRotateSeconds)
        case Some(v) => v.toDoubleOption.filter(s => s > 0 && !s.isInfinite).toRight(s"BLACKHOLE_ROTATE_SECONDS must be a positive number, not $v")
      queueRecords <- get("BLACKHOLE_QUEUE_RECORDS") match
        case None    => Right(DefaultQueueRecords)
        case Some(v) => v.toIntOption.filter(_ > 0).toRight(s"BLACKHOLE_QUEUE_RECORDS must be a positive integer, not $v")
      queueBytes <- get("BLACKHOLE_QUEUE_BYTES") match
        case None    => Right(DefaultQueueBytes)
        case Some(v) => v.toLongOption.filter(_ > 0).toRight(s"BLACKHOLE_QUEUE_BYTES must be a positive integer, not $v")
    yield Config(
      host = get("HOST").getOrElse("127.0.0.1"),
      port = port,
      cpus = get("LANGBENCH_CPUS").flatMap(_.toIntOption).filter(_ > 0).getOrElse(Runtime.getRuntime.availableProcessors()),
      record = record,
      dir = Paths.get(get("BLACKHOLE_DIR").orElse(get("LANGBENCH_INSTANCE_DIR")).getOrElse("recordings")),
      rotateBytes = rotateBytes,
      rotateNanos = (rotateSeconds * 1e9).toLong,
      queueRecords = queueRecords,
      queueBytes = queueBytes
    )
