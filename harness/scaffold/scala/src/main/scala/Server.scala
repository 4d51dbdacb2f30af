// ${name}, Scala scaffold: GET /hello?name=N -> "GREETING N".
import com.sun.net.httpserver.{HttpExchange, HttpServer}
import java.net.{InetSocketAddress, URLDecoder}
import java.nio.charset.StandardCharsets.UTF_8
import java.util.concurrent.Executors

@main def Server(): Unit =
  val greeting = sys.env.getOrElse("GREETING", "hello")
  val cpus = sys.env.get("LANGBENCH_CPUS").flatMap(_.toIntOption).getOrElse(1)
  val server = HttpServer.create(InetSocketAddress(sys.env.getOrElse("HOST", "127.0.0.1"), sys.env("PORT").toInt), 1024)
  def answer(ex: HttpExchange, status: Int, body: String): Unit =
    val bytes = body.getBytes(UTF_8)
    ex.getResponseHeaders.set("Content-Type", "text/plain; charset=utf-8")
    ex.sendResponseHeaders(status, bytes.length.toLong)
    ex.getResponseBody.write(bytes)
    ex.close()
  server.createContext("/", (ex: HttpExchange) =>
    val uri = ex.getRequestURI
    val name = Option(uri.getRawQuery).toList.flatMap(_.split('&')).collectFirst {
      case kv if kv.startsWith("name=") => URLDecoder.decode(kv.drop(5), UTF_8)
    }
    if uri.getPath != "/hello" then answer(ex, 404, "not found")
    else name.filter(_.nonEmpty) match
      case Some(n) => answer(ex, 200, s"$greeting $n")
      case None    => answer(ex, 400, "name is required")
  )
  server.setExecutor(Executors.newFixedThreadPool(2 * cpus))
  // SIGTERM: stop accepting, let exchanges in flight finish (1 s), exit 0
  sun.misc.Signal.handle(sun.misc.Signal("TERM"), _ => { server.stop(1); System.exit(0) })
  server.start()
  System.err.println(s"listening on ${server.getAddress}")
