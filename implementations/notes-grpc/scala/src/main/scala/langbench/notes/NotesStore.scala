package langbench.notes

import com.fasterxml.jackson.databind.{JsonNode, ObjectMapper}
import langbench.notes.proto.{Author, Note}

import java.nio.file.Path
import scala.jdk.CollectionConverters.*

/** The notes of the data file, held in memory as ready-built protobuf messages.
  *
  * `byTitle` answers exact title lookups; `byMail` holds every author's notes in
  * file order. Both are immutable once loaded, so request handlers share them
  * without any locking.
  */
final class NotesStore private (
    val byTitle: Map[String, Note],
    val byMail: Map[String, Vector[Note]],
    val size: Int
) {
  def noteTitled(title: String): Option[Note] = byTitle.get(title)

  def notesBy(mail: String): Vector[Note] = byMail.getOrElse(mail, Vector.empty)
}

object NotesStore {

  /** Reads a JSON array of `{"title", "content", "author": {"nickname", "mail"}}`. */
  def load(path: Path): NotesStore = {
    val root = new ObjectMapper().readTree(path.toFile)
    if (root == null || !root.isArray)
      throw new IllegalArgumentException(s"$path: expected a JSON array of notes")

    val notes = root.elements().asScala.zipWithIndex.map { case (node, i) => toNote(node, i) }.toVector

    // Titles are unique in the contract; should a file repeat one, the first note wins.
    val byTitle = notes.foldLeft(Map.empty[String, Note]) { (acc, note) =>
      if (acc.contains(note.getTitle)) acc else acc.updated(note.getTitle, note)
    }
    // groupBy keeps the original (file) order inside every group.
    val byMail = notes.groupBy(_.getAuthor.getMail)

    new NotesStore(byTitle, byMail, notes.size)
  }

  private def toNote(node: JsonNode, index: Int): Note = {
    val author = node.get("author")
    if (author == null || !author.isObject)
      throw new IllegalArgumentException(s"note #$index: missing object field 'author'")
    Note
      .newBuilder()
      .setTitle(text(node, "title", index))
      .setContent(text(node, "content", index))
      .setAuthor(
        Author
          .newBuilder()
          .setNickname(text(author, "nickname", index))
          .setMail(text(author, "mail", index))
          .build()
      )
      .build()
  }

  private def text(node: JsonNode, field: String, index: Int): String = {
    val value = node.get(field)
    if (value == null || !value.isTextual)
      throw new IllegalArgumentException(s"note #$index: missing string field '$field'")
    value.textValue()
  }
}
