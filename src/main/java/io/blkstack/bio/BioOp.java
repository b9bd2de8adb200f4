package io.blkstack.bio;

/**
 * What a bio asks its device to do: the kernel's {@code REQ_OP_*}. Only {@link #READ} and
 * {@link #WRITE} carry data pages; the others describe a range (or nothing, for a flush).
 */
public enum BioOp {
    /** Read the range into the bio's pages. */
    READ(false, true),
    /** Write the bio's pages to the range. */
    WRITE(true, true),
    /** Make everything completed before this flush durable; carries no range. */
    FLUSH(true, false),
    /** The range's contents are no longer needed; reads may return anything (often zeroes). */
    DISCARD(true, false),
    /** Make the range read as zeroes, without a data payload. */
    WRITE_ZEROES(true, false);

    private final boolean write;
    private final boolean data;

    BioOp(boolean write, boolean data) {
        this.write = write;
        this.data = data;
    }

    /** Whether the operation changes the device (the kernel's {@code op_is_write}). */
    public boolean isWrite() {
        return write;
    }

    /** Whether the bio's pages carry the payload (so the iterator walks the page vector). */
    public boolean hasData() {
        return data;
    }
}
