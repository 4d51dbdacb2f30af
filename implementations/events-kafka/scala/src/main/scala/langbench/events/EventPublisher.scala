package langbench.events

import org.apache.kafka.clients.producer.{Callback, Producer, ProducerRecord, RecordMetadata}
import org.slf4j.LoggerFactory

import java.util.concurrent.atomic.{AtomicInteger, AtomicLong}
import java.util.concurrent.{ExecutorService, Executors, RejectedExecutionException, TimeUnit}
import scala.concurrent.duration.FiniteDuration

/** Hands events to the Kafka producer and reports each one's outcome exactly once.
  *
  * The outcome is only ever one of two things, and this is what makes a 503 safe:
  *   - `Delivered`: the producer's callback reported the broker's acknowledgement;
  *   - `NotDelivered`: the producer's callback reported that it gave up on the record (its
  *     delivery timeout expired, or the broker refused it), or the record was never handed to the
  *     producer at all (see below).
  *
  * There is deliberately no timer of our own between the request and the callback: kafka-clients
  * guarantees the callback within `delivery.timeout.ms` of the record being appended, and a timer
  * of ours could only fire while the producer still holds the record, which it would then deliver
  * after we had answered 503.
  *
  * `KafkaProducer.send` only appends to the producer's buffer, but it may block (up to
  * `max.block.ms`) while the topic's metadata is unknown or the buffer is full, so it runs on one
  * dedicated thread, never on the HTTP event loop. The acknowledgement is not waited for on any
  * thread: the producer's network thread invokes the callback. A record that could not be handed
  * over within `handoffBudget` of its request (the send thread stuck behind metadata waits) is
  * answered `NotDelivered` without ever reaching the producer, which bounds the answer time.
  */
final class EventPublisher(producer: Producer[String, Array[Byte]], topic: String, handoffBudget: FiniteDuration):
  import EventPublisher.*

  private val log = LoggerFactory.getLogger(classOf[EventPublisher])
  private val budgetNanos = handoffBudget.toNanos
  private val sendThread: ExecutorService = Executors.newSingleThreadExecutor { r =>
    val t = new Thread(r, "kafka-send")
    t.setDaemon(true)
    t
  }
  private val inFlight = new AtomicInteger
  private val failures = new AtomicLong
  private val lastFailureLog = new AtomicLong(System.nanoTime() - FailureLogIntervalNanos)

  /** Produces `value` keyed by `key`; `done` is called once, on a producer or send thread. */
  def publish(key: String, value: Array[Byte], done: Outcome => Unit): Unit =
    val arrived = System.nanoTime()
    inFlight.incrementAndGet()
    val report = new Report(done)
    try sendThread.execute(() => send(key, value, arrived, report))
    catch case _: RejectedExecutionException => report.notDelivered(null) // shutting down: never handed over

  /** Requests whose outcome is not known yet. */
  def pending: Int = inFlight.get

  /** Stops taking records; those already handed over keep their callbacks. */
  def stopAccepting(): Unit = sendThread.shutdown()

  private def send(key: String, value: Array[Byte], arrived: Long, report: Report): Unit =
    if System.nanoTime() - arrived > budgetNanos then report.notDelivered(null)
    else
      try producer.send(new ProducerRecord(topic, key, value), report)
      catch
        // send() threw: the record was not appended (producer closed, serialization, interrupt).
        case e: Exception => report.notDelivered(e)

  /** The producer callback of one record; completes the request at most once. */
  private final class Report(done: Outcome => Unit) extends Callback:
    private var reported = false // callbacks of one record come from one thread, once; this guards the send() paths

    override def onCompletion(metadata: RecordMetadata, exception: Exception): Unit =
      if exception == null then finish(Delivered) else notDelivered(exception)

    def notDelivered(cause: Exception): Unit =
      if cause != null then logFailure(cause)
      finish(NotDelivered)

    private def finish(outcome: Outcome): Unit = synchronized {
      if !reported then
        reported = true
        inFlight.decrementAndGet()
        done(outcome)
    }

  /** Failures are logged at most once per interval with a count (never per request at info). */
  private def logFailure(e: Exception): Unit =
    val n = failures.incrementAndGet()
    val now = System.nanoTime()
    val last = lastFailureLog.get
    if now - last >= FailureLogIntervalNanos && lastFailureLog.compareAndSet(last, now) then
      log.warn(s"produce failed ($n so far): ${e.getClass.getSimpleName}: ${e.getMessage}")
    else if log.isDebugEnabled then log.debug("produce failed", e)

object EventPublisher:
  sealed trait Outcome
  case object Delivered extends Outcome
  case object NotDelivered extends Outcome

  private val FailureLogIntervalNanos = TimeUnit.SECONDS.toNanos(10)
