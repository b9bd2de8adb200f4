package io.blkstack.config;

/**
 * A configuration that cannot be used, with its place: the file, the 1-based line, the key path
 * ({@code devices.a.size}), the bad value and why, formatted as
 * {@code stack.yaml:7: devices.a.size: '1GB' has unknown unit 'GB': use B, KiB, ...}.
 *
 * <p>Checked on purpose: every caller ({@code serve}, {@code table check}) must turn it into a
 * message for the user and exit code 1, never a stack trace.
 */
public final class ConfigException extends Exception {

    private static final long serialVersionUID = 1L;

    private final String file;
    private final int line;
    private final String path;
    private final String value;
    private final String reason;

    /**
     * @param file the configuration's name as the user gave it
     * @param line 1-based line, 0 if the error is about the whole file
     * @param path the key path such as {@code devices.a.size}, or empty
     * @param value the offending text (quoted in the message), or null when the reason quotes it
     * @param reason why, in words
     */
    public ConfigException(String file, int line, String path, String value, String reason) {
        super(format(file, line, path, value, reason));
        this.file = file;
        this.line = line;
        this.path = path;
        this.value = value;
        this.reason = reason;
    }

    /** {@code file:line: path: 'value' reason}, leaving out what is unknown. */
    private static String format(String file, int line, String path, String value, String reason) {
        StringBuilder sb = new StringBuilder(file);
        if (line > 0) {
            sb.append(':').append(line);
        }
        sb.append(": ");
        if (path != null && !path.isEmpty()) {
            sb.append(path).append(": ");
        }
        if (value != null) {
            sb.append('\'').append(value).append("' ");
        }
        return sb.append(reason).toString();
    }

    /** The configuration's name. */
    public String file() {
        return file;
    }

    /** The 1-based line, 0 if unknown. */
    public int line() {
        return line;
    }

    /** The key path, or empty. */
    public String path() {
        return path;
    }

    /** The offending text, or null. */
    public String value() {
        return value;
    }

    /** Why, without the place. */
    public String reason() {
        return reason;
    }
}
