package langbench.notes

import com.fasterxml.jackson.databind.ObjectMapper
import io.grpc.{ManagedChannel, Status, StatusRuntimeException}
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder
import langbench.notes.proto.{Author, NoticeboardGrpc, Title}

import java.util.concurrent.TimeUnit
import scala.jdk.CollectionConverters.*
import scala.util.control.NonFatal

/** Conformance client: runs the fixed hit / miss / stream sequence against any
  * Noticeboard server and prints one JSON verdict on stdout. Exit 0 only when all pass.
  */
object NotesClient {
  private val DeadlineSeconds = 5L

  final case class Check(name: String, ok: Boolean, detail: String)

  def main(args: Array[String]): Unit = {
    val target = parseTarget(args.toList).getOrElse {
      System.err.println("usage: NotesClient --target HOST:PORT")
      sys.exit(2)
    }

    val channel: ManagedChannel = NettyChannelBuilder.forTarget(target).usePlaintext().build()
    val checks =
      try {
        val stub = NoticeboardGrpc.newBlockingStub(channel)
        def call = stub.withDeadlineAfter(DeadlineSeconds, TimeUnit.SECONDS)
        List(
          check("hit")(hit(call)),
          check("miss")(miss(call)),
          check("stream")(stream(call))
        )
      } finally {
        channel.shutdownNow()
        channel.awaitTermination(2, TimeUnit.SECONDS)
      }

    val ok = checks.forall(_.ok)
    val mapper = new ObjectMapper()
    val verdict = mapper.createObjectNode()
    verdict.put("client", "scala")
    verdict.put("target", target)
    verdict.put("ok", ok)
    val array = verdict.putArray("checks")
    checks.foreach { c =>
      array.addObject().put("name", c.name).put("ok", c.ok).put("detail", c.detail)
    }
    System.out.println(mapper.writeValueAsString(verdict))
    System.out.flush()
    sys.exit(if (ok) 0 else 1)
  }

  private type Stub = NoticeboardGrpc.NoticeboardBlockingStub

  private def hit(stub: Stub): (Boolean, String) = {
    val note = stub.getNoteByTitle(Title.newBuilder().setTitle("Hello").build())
    val got =
      s"title=${note.getTitle} author=${note.getAuthor.getNickname} <${note.getAuthor.getMail}> content=${note.getContent}"
    val ok = note.getTitle == "Hello" && note.getAuthor.getNickname == "Hans" &&
      note.getAuthor.getMail == "hans@gmail.com" && note.getContent == "Hello, world of notes."
    (ok, got)
  }

  private def miss(stub: Stub): (Boolean, String) =
    try {
      val note = stub.getNoteByTitle(Title.newBuilder().setTitle("no such note").build())
      (false, s"expected NOT_FOUND, got a note titled ${note.getTitle}")
    } catch {
      case e: StatusRuntimeException if e.getStatus.getCode == Status.Code.NOT_FOUND =>
        (true, s"NOT_FOUND: ${Option(e.getStatus.getDescription).getOrElse("")}")
    }

  private def stream(stub: Stub): (Boolean, String) = {
    val author = Author.newBuilder().setNickname("Hans").setMail("hans@gmail.com").build()
    val titles = stub.listNotesByAuthor(author).asScala.map(_.getTitle).toList
    val expected = List("Hello", "Goodbye")
    (titles == expected, s"titles=${titles.mkString("[", ", ", "]")}, status OK")
  }

  /** Any failure (connection refused, deadline, wrong status) is a failed check, not a crash. */
  private def check(name: String)(body: => (Boolean, String)): Check =
    try {
      val (ok, detail) = body
      Check(name, ok, detail)
    } catch {
      case e: StatusRuntimeException =>
        val status = e.getStatus
        val cause = Option(status.getCause).map(c => s" ($c)").getOrElse("")
        Check(name, ok = false, s"${status.getCode}: ${Option(status.getDescription).getOrElse("")}$cause")
      case NonFatal(e) => Check(name, ok = false, e.toString)
    }

  private def parseTarget(args: List[String]): Option[String] = args match {
    case "--target" :: value :: Nil                   => Some(value)
    case single :: Nil if single.startsWith("--target=") => Some(single.stripPrefix("--target="))
    case _                                            => None
  }
}
