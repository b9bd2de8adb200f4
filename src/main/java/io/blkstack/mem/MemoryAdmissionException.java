package io.blkstack.mem;

/**
 * Memory that cannot be admitted: a reservation larger than what the arena has left above its
 * watermark and the other reservations, or a configuration the server cannot serve within its
 * memory (the payload budget cannot hold one request). The message carries the numbers (the arena,
 * the ledger of what each consumer keeps) and, where it can, the memory that would do.
 */
public final class MemoryAdmissionException extends IllegalArgumentException {

    private static final long serialVersionUID = 1L;

    public MemoryAdmissionException(String message) {
        super(message);
    }
}
