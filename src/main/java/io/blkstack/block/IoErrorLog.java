package io.blkstack.block;

import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One log line per failed I/O: which device, where, what, and the status, like the kernel's
 * {@code blk_update_request: I/O error, dev X, sector S op OP}.
 *
 * <p>Called from completion context, which must never block or wait (DESIGN.md section 1, rule
 * 2), yet a storm of errors (a dead disk, a pulled remote) makes one line per failed bio. So the
 * logger, {@code io.blkstack.ioerror}, is bound in {@code logback.xml} to Logback's
 * {@code AsyncAppender} with {@code neverBlock=true} and a bounded queue: the completing thread
 * only builds the event and offers it to the queue; when the queue is full the line is dropped,
 * and the console's lock and a standard error nobody reads are met by the appender's own thread.
 * That was chosen over a rate limit here because it keeps every line while the writer keeps up
 * (an operator wants each failed sector) and needs no state of ours; the cost is an event object
 * per failure, which is the error path, not the data path. Lines at a level the logger does not
 * enable are not built at all.
 */
public final class IoErrorLog {

    /** The logger name {@code logback.xml} routes through the non-blocking appender. */
    public static final String LOGGER = "io.blkstack.ioerror";

    private final Logger log = LoggerFactory.getLogger(LOGGER);

    /**
     * Logs one failed I/O on {@code device}: {@code sectorCount} sectors at {@code sector},
     * operation {@code op}, ended with {@code status}; {@code who} names the originator (a connection).
     */
    public void failed(String device, BioOp op, long sector, long sectorCount, BioStatus status, String who) {
        if (!status.isError()) {
            throw new IllegalArgumentException("I/O error log for " + device + " sector " + sector + ": status "
                    + status + " is not an error");
        }
        if (log.isErrorEnabled()) {
            log.error("I/O error, dev {}, sector {} ({} sectors) op {}: {} ({})", device, sector, sectorCount, op,
                    status.errnoName(), who);
        }
    }
}
