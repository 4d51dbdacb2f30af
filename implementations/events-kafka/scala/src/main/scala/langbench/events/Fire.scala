package langbench.events

import io.circe.{Json, JsonNumber, Printer}

import java.nio.ByteBuffer
import java.nio.charset.{CharacterCodingException, CodingErrorAction, StandardCharsets}

/** The pure part of `POST /fire/{id}`: validating the id and the body, encoding the event. */
object Fire:

  /** Longest accepted reason, in UTF-8 bytes. */
  val MaxReasonBytes = 1024

  /** The id path segment as a canonical decimal u64 (the record key and the event's `id`), if it
    * is one: ASCII digits only, at most 18446744073709551615.
    */
  def parseId(segment: String): Option[String] =
    if segment.isEmpty || !segment.forall(c => c >= '0' && c <= '9') then None
    else
      try Some(java.lang.Long.toUnsignedString(java.lang.Long.parseUnsignedLong(segment)))
      catch case _: NumberFormatException => None

  /** The `reason` of a request body, if the body is strict UTF-8 JSON holding an object whose
    * `reason` is a string of at most [[MaxReasonBytes]] UTF-8 bytes. Other members are ignored.
    */
  def parseReason(body: ByteBuffer): Option[String] =
    decodeUtf8(body)
      .flatMap(text => io.circe.jawn.parse(text).toOption)
      .flatMap(_.asObject)
      .flatMap(_("reason"))
      .flatMap(_.asString)
      .filter { reason =>
        val n = utf8Length(reason)
        n >= 0 && n <= MaxReasonBytes
      }

  /** The event `{"id":<id>,"reason":"<text>"}`: compact JSON, UTF-8, members in that order. */
  def event(id: String, reason: String): Array[Byte] =
    Printer.noSpaces
      .print(Json.obj("id" -> Json.fromJsonNumber(JsonNumber.fromIntegralStringUnsafe(id)), "reason" -> Json.fromString(reason)))
      .getBytes(StandardCharsets.UTF_8)

  private def decodeUtf8(bytes: ByteBuffer): Option[String] =
    try
      Some(
        StandardCharsets.UTF_8
          .newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(bytes)
          .toString
      )
    catch case _: CharacterCodingException => None

  /** UTF-8 length of `s`, or -1 if it holds an unpaired surrogate (a JSON `\ud800` escape), which
    * has no UTF-8 form.
    */
  private[events] def utf8Length(s: String): Int =
    var n = 0
    var i = 0
    while i < s.length do
      val c = s.charAt(i)
      if c < 0x80 then n += 1
      else if c < 0x800 then n += 2
      else if Character.isHighSurrogate(c) then
        if i + 1 < s.length && Character.isLowSurrogate(s.charAt(i + 1)) then
          n += 4
          i += 1
        else return -1
      else if Character.isLowSurrogate(c) then return -1
      else n += 3
      i += 1
    n
