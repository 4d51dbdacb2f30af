package langbench.notes

import io.grpc.Status
import io.grpc.stub.StreamObserver
import langbench.notes.proto.{Author, Note, NoticeboardGrpc, Title}

/** The Noticeboard service: both calls are answered from the in-memory store and never block. */
final class NoticeboardService(store: NotesStore) extends NoticeboardGrpc.NoticeboardImplBase {

  override def getNoteByTitle(request: Title, responseObserver: StreamObserver[Note]): Unit =
    store.noteTitled(request.getTitle) match {
      case Some(note) =>
        responseObserver.onNext(note)
        responseObserver.onCompleted()
      case None =>
        responseObserver.onError(
          Status.NOT_FOUND.withDescription(s"no note titled \"${request.getTitle}\"").asRuntimeException()
        )
    }

  override def listNotesByAuthor(request: Author, responseObserver: StreamObserver[Note]): Unit = {
    // Matches on the mail only; an unknown author is an empty stream that ends with OK.
    store.notesBy(request.getMail).foreach(responseObserver.onNext)
    responseObserver.onCompleted()
  }
}
