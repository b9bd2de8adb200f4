package io.blkstack.control;

/**
 * A control request refused or failed: the HTTP status, a short machine-readable code, and a
 * message that names the device, the line and the value where they apply (the way configuration
 * errors do). The reply body carries every field ({@link ControlApi.ErrorReply}); the request
 * changed nothing.
 */
public final class ControlException extends Exception {

    private final int status;
    private final String code;
    private final String device;
    private final Integer line;
    private final String value;

    /** A refusal with every detail; {@code device}, {@code line} and {@code value} may be null. */
    public ControlException(int status, String code, String message, String device, Integer line, String value) {
        super(message);
        if (status < 400 || status > 599) {
            throw new IllegalArgumentException("control error status " + status + " is not an HTTP error");
        }
        this.status = status;
        this.code = code;
        this.device = device;
        this.line = line;
        this.value = value;
    }

    /** A refusal about {@code device} (may be null). */
    public ControlException(int status, String code, String message, String device) {
        this(status, code, message, device, null, null);
    }

    /** The HTTP status of the reply. */
    public int status() {
        return status;
    }

    /** The machine-readable code (see the README's table of error codes). */
    public String code() {
        return code;
    }

    /** The reply body. */
    public ControlApi.ErrorReply reply() {
        return new ControlApi.ErrorReply(status, code, getMessage(), device, line, value);
    }
}
