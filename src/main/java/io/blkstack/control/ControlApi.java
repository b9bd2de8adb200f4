package io.blkstack.control;

import com.fasterxml.jackson.annotation.JsonInclude;
import java.util.List;
import java.util.Map;

/**
 * The control socket's request and reply bodies, as Jackson maps them to and from JSON (the
 * README lists every route with its shapes). Field names are the JSON names; a request with a
 * field not listed here is refused with {@code bad-json}.
 */
public final class ControlApi {

    private ControlApi() {
    }

    /** The version prefix of every route. */
    public static final String PREFIX = "/v1";

    // ---- requests ----------------------------------------------------------------------------

    /** {@code POST /v1/devices}: a new mapped device over {@code table} (dmsetup lines). */
    public record CreateRequest(String name, String table) {
    }

    /**
     * {@code PUT /v1/devices/NAME/table} (load) and {@code POST /v1/devices/NAME/reload}: the
     * new table; {@code timeout} bounds reload's suspend (a duration such as {@code 5s}; absent:
     * the server's default).
     */
    public record TableRequest(String table, String timeout) {
    }

    /** {@code POST /v1/devices/NAME/suspend} and {@code resume}: the suspend's bound, optional. */
    public record SuspendRequest(String timeout) {
    }

    /** {@code POST /v1/devices/NAME/message}: {@code dmsetup message NAME SECTOR MESSAGE}. */
    public record MessageRequest(Long sector, String message) {
    }

    /** {@code POST /v1/exports}: a new export of {@code device}. */
    public record ExportRequest(String name, String device, Boolean readonly, String description) {
    }

    // ---- replies -----------------------------------------------------------------------------

    /**
     * One device: {@code kind} is {@code mapped}, {@code file}, {@code memory} or {@code null};
     * {@code state} {@code ACTIVE} or {@code SUSPENDED}; {@code dependsOn} the devices its table
     * maps to, {@code usedBy} the mapped devices whose live or loaded table maps to it,
     * {@code exportedAs} its exports and {@code clients} the NBD connections on them.
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record DeviceInfo(String name, String kind, long sizeSectors, String state, Integer targets,
            Boolean inactiveTable, List<String> dependsOn, List<String> usedBy, List<String> exportedAs,
            int clients) {
    }

    /** An export: its device, mode, description, size and the clients connected now. */
    public record ExportInfo(String name, String device, boolean readonly, String description, long sizeBytes,
            int clients) {
    }

    /** {@code GET /v1/devices}: every device (bottom first, then mapped in build order) and every export. */
    public record DeviceList(List<DeviceInfo> devices, List<ExportInfo> exports) {
    }

    /** {@code GET /v1/exports}. */
    public record ExportList(List<ExportInfo> exports) {
    }

    /** {@code GET .../table} and {@code GET .../status}: one dmsetup line per target. */
    public record Lines(String name, List<String> lines) {
    }

    /** {@code POST .../message}: the target's reply (often empty). */
    public record MessageReply(String name, long sector, String message, String reply) {
    }

    /** {@code DELETE}: what was removed, and how many connections were told to close. */
    public record Removed(String name, int connectionsClosed) {
    }

    /**
     * {@code GET /v1/stats[/NAME]}: one device's completed bios by operation, sectors each way,
     * errors by status (errno names, every status listed), bios in flight, and latency per class
     * ({@code read}, {@code write}, {@code other}). {@code exportedAs} names the exports serving it.
     */
    public record DeviceStatsReply(String name, long reads, long writes, long flushes, long discards,
            long writeZeroes, long readSectors, long writtenSectors, long discardedSectors, long zeroedSectors,
            long inFlight, Map<String, Long> errors, Map<String, LatencyReply> latency, List<String> exportedAs) {
    }

    /**
     * One latency class: bios recorded, their exact total, and percentiles and maximum from the
     * HdrHistogram (1 % precision, 1 µs resolution), all in microseconds.
     */
    public record LatencyReply(long count, double sumMicros, double p50Micros, double p90Micros, double p99Micros,
            double p999Micros, double maxMicros) {
    }

    /**
     * {@code GET /v1/exports/NAME/stats}: one export's NBD requests that are over, by command
     * (answered or dropped with their connection; an error reply counts too), the bytes of those
     * that succeeded (read: sent to the client; write: written; trim and write-zeroes: the range),
     * error replies by NBD error name (every one listed), requests in flight, and latency per
     * class ({@code read}, {@code write}, {@code other}) from header read to reply sent.
     */
    public record ExportStatsReply(String name, String device, long reads, long writes, long flushes, long trims,
            long writeZeroes, long blockStatus, long cache, long other, long readBytes, long writtenBytes,
            long trimmedBytes, long zeroedBytes, long inFlight, Map<String, Long> errors,
            Map<String, LatencyReply> latency, int clients) {
    }

    /**
     * {@code GET /v1/stats}: every device, bottom first, then mapped in build order; then every
     * export in the order they were added.
     */
    public record StatsList(List<DeviceStatsReply> devices, List<ExportStatsReply> exports) {
    }

    /** Every error: the HTTP status again, a code, the message, and where it applies. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record ErrorReply(int status, String error, String message, String device, Integer line, String value) {
    }
}
