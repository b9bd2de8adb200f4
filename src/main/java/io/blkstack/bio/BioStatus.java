package io.blkstack.bio;

/**
 * The outcome of a bio (the kernel's {@code blk_status_t}), with the errno each maps to. I/O errors
 * travel as values to the bio's completion; they are never thrown across the stack.
 */
public enum BioStatus {
    OK(0, "OK"),
    IOERR(5, "EIO"),
    NOSPC(28, "ENOSPC"),
    INVAL(22, "EINVAL"),
    NOTSUPP(95, "EOPNOTSUPP"),
    PERM(1, "EPERM"),
    AGAIN(11, "EAGAIN");

    private final int errno;
    private final String errnoName;

    BioStatus(int errno, String errnoName) {
        this.errno = errno;
        this.errnoName = errnoName;
    }

    /** The positive errno value (0 for {@link #OK}). */
    public int errno() {
        return errno;
    }

    /** The errno's symbolic name, such as {@code EIO}. */
    public String errnoName() {
        return errnoName;
    }

    /** Whether this is an error. */
    public boolean isError() {
        return this != OK;
    }

    /**
     * The status for an errno (either sign), IOERR for values without one (as the kernel's
     * {@code errno_to_blk_status}); a switch, so an error reply allocates nothing.
     */
    public static BioStatus fromErrno(int errno) {
        return switch (Math.abs(errno)) {
            case 0 -> OK;
            case 28 -> NOSPC;
            case 22 -> INVAL;
            case 95 -> NOTSUPP;
            case 1 -> PERM;
            case 11 -> AGAIN;
            default -> IOERR;
        };
    }
}
