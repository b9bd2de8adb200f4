package io.blkstack.dm;

/**
 * A table (or a target's arguments) that cannot be loaded: names the line, the target, the
 * argument and why, as {@code line 2: linear: argument 2 'abc' is not a sector offset}.
 *
 * <p>Checked on purpose: a bad table is a user's configuration error, and every caller (the
 * configuration loader, {@code table check}) must turn it into a message with the file name.
 */
public final class TableException extends Exception {

    private static final long serialVersionUID = 1L;

    private final int line;
    private final String targetType;
    private final int argument;
    private final String value;
    private final String reason;

    /**
     * @param line 1-based line number, 0 if not known
     * @param targetType the target's type name, or null for a line-level error
     * @param argument 1-based target argument index, 0 if the error is not about one argument
     * @param value the offending text, or null
     * @param reason why, in words
     */
    public TableException(int line, String targetType, int argument, String value, String reason) {
        super(format(line, targetType, argument, value, reason));
        this.line = line;
        this.targetType = targetType;
        this.argument = argument;
        this.value = value;
        this.reason = reason;
    }

    /** A copy of this error placed at {@code lineNumber} (the table adds the line to a target's error). */
    public TableException atLine(int lineNumber) {
        return new TableException(lineNumber, targetType, argument, value, reason);
    }

    private static String format(int line, String type, int argument, String value, String reason) {
        StringBuilder sb = new StringBuilder();
        if (line > 0) {
            sb.append("line ").append(line).append(": ");
        }
        if (type != null) {
            sb.append(type).append(": ");
        }
        if (argument > 0) {
            sb.append("argument ").append(argument).append(' ');
        }
        if (value != null) {
            sb.append('\'').append(value).append("' ");
        }
        sb.append(reason);
        return sb.toString();
    }

    /** The 1-based line number, 0 if unknown. */
    public int line() {
        return line;
    }

    /** The target type the error is about, or null. */
    public String targetType() {
        return targetType;
    }

    /** The 1-based target argument index, 0 if none. */
    public int argument() {
        return argument;
    }

    /** The offending text, or null. */
    public String value() {
        return value;
    }

    /** Why, without the position. */
    public String reason() {
        return reason;
    }
}
