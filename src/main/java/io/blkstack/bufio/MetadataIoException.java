package io.blkstack.bufio;

/**
 * A metadata read or write failed. Metadata I/O runs on the control path (workers), so the
 * failure travels as an exception to the code that asked for the block, which turns it into an
 * error status or a read-only pool; it never crosses a completion callback.
 */
public final class MetadataIoException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    public MetadataIoException(String message) {
        super(message);
    }
}
