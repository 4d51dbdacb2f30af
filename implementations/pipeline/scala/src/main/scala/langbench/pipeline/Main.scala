package langbench.pipeline

import sun.misc.Signal

import java.util.concurrent.{CountDownLatch, TimeUnit}
import scala.util.control.NonFatal

/** One program, three roles (LANGBENCH_NODE = a, b or c); see scenarios/pipeline/README.md.
  *
  * SIGTERM/SIGINT: the role's own orderly stop (A answers what it can within ~4 s, B and C let
  * what they hold be acknowledged within ~3 s), exit 0; a watchdog halts the JVM at 4.8 s whatever
  * happens (everything C acknowledged is already synced, so nothing acknowledged is lost by that).
  */
object Main:
  private val WatchdogMs = 4800L

  def main(args: Array[String]): Unit =
    val started = System.nanoTime()
    val stop = new CountDownLatch(1)
    @volatile var signal = ""
    // Handlers first: a signal during start-up is not lost.
    List("TERM", "INT").foreach(name => Signal.handle(new Signal(name), s => { signal = s.getName; stop.countDown() }))

    val cfg = Config.fromEnv(sys.env) match
      case Right(c) => c
      case Left(err) =>
        Log.error(err)
        sys.exit(2)
    Log.node = cfg.role.toString.toLowerCase

    val node: Node =
      try
        val transport = Transport(cfg.cpus)
        val n: Node = cfg.role match
          case Role.A => new Front(cfg, transport)
          case Role.B => new RelayNode(cfg, transport)
          case Role.C => new CommitNode(cfg, transport)
        n.start()
        Log.info(
          s"listening on ${cfg.host}:${cfg.port}: ${n.describe}; ${transport.name} transport, ${transport.loops.size} event loop(s), " +
            s"ROUNDS=${cfg.rounds} MAX_INFLIGHT=${cfg.maxInflight} MAX_PAYLOAD=${cfg.maxPayload}; ready in ${(System.nanoTime() - started) / 1000000} ms"
        )
        n
      catch
        case NonFatal(e) =>
          Log.error(s"cannot start node ${cfg.role.toString.toLowerCase} on ${cfg.host}:${cfg.port}", e)
          sys.exit(1)

    stop.await()
    val at = System.nanoTime()
    val watchdog = new Thread(() => {
      try
        Thread.sleep(WatchdogMs)
        Log.warn(s"not stopped after $WatchdogMs ms: halting")
        Runtime.getRuntime.halt(0)
      catch case _: InterruptedException => ()
    }, "stop-watchdog")
    watchdog.setDaemon(true)
    watchdog.start()
    Log.info(s"SIG$signal: stopping")
    try node.stop(at)
    catch case NonFatal(e) => Log.error("error while stopping", e)
    Log.info(s"stopped in ${TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - at)} ms")
    System.exit(0)
