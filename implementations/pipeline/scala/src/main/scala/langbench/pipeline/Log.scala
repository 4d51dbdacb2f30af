package langbench.pipeline

import java.time.Instant

/** Lines on stderr: start, stop, stream changes and failures; nothing per operation. */
object Log:
  @volatile var node: String = "?"

  private def line(level: String, msg: String): Unit = System.err.println(s"${Instant.now} $level pipeline-$node: $msg")

  def info(msg: String): Unit = line("INFO ", msg)
  def warn(msg: String): Unit = line("WARN ", msg)
  def error(msg: String, cause: Throwable = null): Unit =
    line("ERROR", if cause == null then msg else s"$msg: $cause")
    if cause != null then cause.printStackTrace(System.err)
