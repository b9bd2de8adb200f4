package io.blkstack.nbd;

import io.blkstack.block.DeviceStats;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.LongAdder;
import org.HdrHistogram.ConcurrentHistogram;
import org.HdrHistogram.Histogram;

/**
 * The request statistics of one NBD export (as nbdkit's stats filter keeps them): requests and
 * bytes per command, error replies by NBD error value, requests in flight, and a latency
 * histogram per class of command (read, write, other), from the moment the request's header was
 * read until its reply was sent.
 *
 * <p><b>What counts.</b> Every request whose header was read is one in flight until the writer is
 * done with it ({@link NbdRequest}: its reply sent, or dropped with a broken connection); then it
 * counts once under its command, its length counts in {@link Snapshot#bytes} only if it succeeded
 * (a READ's bytes went to the client, a WRITE's reached the device, a TRIM's or WRITE_ZEROES's
 * range was done), and a failed one counts under its error value. A request past the export's
 * end or of an unknown command is a request with an error like any other. {@code NBD_CMD_DISC}
 * ends the connection and is not a request.
 *
 * <p><b>On the data path.</b> The same rules as {@link io.blkstack.block.DeviceStats}: {@link LongAdder}
 * adds and one wait-free {@link ConcurrentHistogram#recordValue} per request, no lock, no
 * allocation; all of it is created with the export. A reader ({@link #snapshot}) copies on its own
 * thread and never holds a request up.
 */
public final class ExportStats {

    /** The NBD commands a request can carry, with {@link #OTHER} for a command this server does not know. */
    public enum Command {
        READ, WRITE, FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS, CACHE, OTHER;

        /** The command of an NBD command number; a switch, so nothing is allocated. */
        static Command of(int command) {
            return switch (command) {
                case NbdProtocol.CMD_READ -> READ;
                case NbdProtocol.CMD_WRITE -> WRITE;
                case NbdProtocol.CMD_FLUSH -> FLUSH;
                case NbdProtocol.CMD_TRIM -> TRIM;
                case NbdProtocol.CMD_WRITE_ZEROES -> WRITE_ZEROES;
                case NbdProtocol.CMD_BLOCK_STATUS -> BLOCK_STATUS;
                case NbdProtocol.CMD_CACHE -> CACHE;
                default -> OTHER;
            };
        }

        /** The latency class: READ, WRITE, or OTHER for everything else. */
        public DeviceStats.LatencyClass latencyClass() {
            return switch (this) {
                case READ -> DeviceStats.LatencyClass.READ;
                case WRITE -> DeviceStats.LatencyClass.WRITE;
                default -> DeviceStats.LatencyClass.OTHER;
            };
        }
    }

    /** The error values of the NBD protocol, as replies carry them. */
    public enum Error {
        EPERM(NbdProtocol.EPERM), EIO(NbdProtocol.EIO), ENOMEM(NbdProtocol.ENOMEM), EINVAL(NbdProtocol.EINVAL),
        ENOSPC(NbdProtocol.ENOSPC), EOVERFLOW(NbdProtocol.EOVERFLOW), ENOTSUP(NbdProtocol.ENOTSUP),
        ESHUTDOWN(NbdProtocol.ESHUTDOWN);

        private final int value;

        Error(int value) {
            this.value = value;
        }

        /** The value on the wire. */
        public int value() {
            return value;
        }

        /**
         * The error of a nonzero reply value. This server sends no other values ({@link NbdProtocol#errnoOf});
         * one would count as EIO, which is how a client reads an unknown value.
         */
        static Error of(int errno) {
            return switch (errno) {
                case NbdProtocol.EPERM -> EPERM;
                case NbdProtocol.ENOMEM -> ENOMEM;
                case NbdProtocol.EINVAL -> EINVAL;
                case NbdProtocol.ENOSPC -> ENOSPC;
                case NbdProtocol.EOVERFLOW -> EOVERFLOW;
                case NbdProtocol.ENOTSUP -> ENOTSUP;
                case NbdProtocol.ESHUTDOWN -> ESHUTDOWN;
                default -> EIO;
            };
        }
    }

    private static final List<Command> COMMANDS = List.of(Command.values());
    private static final List<Error> ERRORS = List.of(Error.values());
    private static final List<DeviceStats.LatencyClass> CLASSES = List.of(DeviceStats.LatencyClass.values());

    private final String name;
    private final LongAdder[] requests = adders(COMMANDS.size());
    private final LongAdder[] bytes = adders(COMMANDS.size());
    private final LongAdder[] errors = adders(ERRORS.size());
    private final LongAdder started = new LongAdder();
    private final LongAdder completed = new LongAdder();
    private final LongAdder[] latencyNanosSum = adders(CLASSES.size());
    private final ConcurrentHistogram[] latency = new ConcurrentHistogram[CLASSES.size()];

    /** Statistics of the export {@code name}, all at zero. */
    public ExportStats(String name) {
        this.name = name;
        for (int i = 0; i < latency.length; i++) {
            latency[i] = new ConcurrentHistogram(DeviceStats.LATENCY_NANOS_LOWEST, DeviceStats.LATENCY_NANOS_HIGHEST,
                    DeviceStats.LATENCY_DIGITS);
        }
    }

    private static LongAdder[] adders(int n) {
        LongAdder[] a = new LongAdder[n];
        for (int i = 0; i < n; i++) {
            a[i] = new LongAdder();
        }
        return a;
    }

    /** The export these statistics count. */
    public String name() {
        return name;
    }

    /** One request's header was read: in flight from now until {@link #done}. */
    void start() {
        started.increment();
    }

    /**
     * One request is over: NBD {@code command} of {@code length} bytes, replied to with
     * {@code errno} (0 for success), {@code latencyNanos} after its header was read.
     */
    void done(int command, long length, int errno, long latencyNanos) {
        Command c = Command.of(command);
        requests[c.ordinal()].increment();
        if (errno == 0) {
            bytes[c.ordinal()].add(length);
        } else {
            errors[Error.of(errno).ordinal()].increment();
        }
        int l = c.latencyClass().ordinal();
        long nanos = Math.min(Math.max(latencyNanos, 0), DeviceStats.LATENCY_NANOS_HIGHEST);
        latencyNanosSum[l].add(nanos);
        latency[l].recordValue(nanos);
        completed.increment();
    }

    /** A copy for a reader: counters read once each, histograms copied. */
    public Snapshot snapshot() {
        long[] commandRequests = new long[COMMANDS.size()];
        long[] commandBytes = new long[COMMANDS.size()];
        for (int i = 0; i < COMMANDS.size(); i++) {
            commandRequests[i] = requests[i].sum();
            commandBytes[i] = bytes[i].sum();
        }
        long[] errorCounts = new long[ERRORS.size()];
        for (int i = 0; i < ERRORS.size(); i++) {
            errorCounts[i] = errors[i].sum();
        }
        List<DeviceStats.Latency> latencies = new ArrayList<>(CLASSES.size());
        for (DeviceStats.LatencyClass c : CLASSES) {
            latencies.add(new DeviceStats.Latency(c, latency[c.ordinal()].copy(), latencyNanosSum[c.ordinal()].sum()));
        }
        // Completed is read before started, so a request that ends in between cannot make it negative.
        long done = completed.sum();
        long inFlight = Math.max(0, started.sum() - done);
        return new Snapshot(name, commandRequests, commandBytes, errorCounts, inFlight, latencies);
    }

    /** What {@link #snapshot} returns; arrays are indexed by {@link Command} and {@link Error} ordinals. */
    public record Snapshot(String name, long[] requests, long[] bytes, long[] errors, long inFlight,
            List<DeviceStats.Latency> latencies) {

        /** Requests of {@code command} that are over. */
        public long requests(Command command) {
            return requests[command.ordinal()];
        }

        /** Bytes of the requests of {@code command} that succeeded. */
        public long bytes(Command command) {
            return bytes[command.ordinal()];
        }

        /** Requests of any command answered with {@code error}. */
        public long errors(Error error) {
            return errors[error.ordinal()];
        }

        /** The latency of one class. */
        public DeviceStats.Latency latency(DeviceStats.LatencyClass c) {
            return latencies.get(c.ordinal());
        }
    }
}
