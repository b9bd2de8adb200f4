package io.blkstack.nbd;

/**
 * A configuration the server cannot serve within its memory: the payload budget cannot hold one
 * request, or an explicit budget would promise pages the arena does not have. The message carries
 * the numbers (arena, what the stack keeps, the budget) and, where it can, the memory that would do.
 */
public final class MemoryAdmissionException extends IllegalArgumentException {

    private static final long serialVersionUID = 1L;

    public MemoryAdmissionException(String message) {
        super(message);
    }
}
