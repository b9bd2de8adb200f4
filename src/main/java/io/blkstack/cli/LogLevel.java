package io.blkstack.cli;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.LoggerContext;
import java.util.Locale;
import org.slf4j.LoggerFactory;

/**
 * Sets how much blkstack logs ({@code serve --log-level}, YAML {@code log-level}) and the name in
 * front of each line: the level of the {@code io.blkstack} logger and the
 * {@code blkstack.log.prefix} property in Logback, the backend the jar ships ({@code logback.xml}).
 * Only the command line touches the backend; everything else logs through SLF4J and does not know it.
 */
final class LogLevel {

    /** The logger every blkstack logger is below. */
    static final String BLKSTACK_LOGGER = "io.blkstack";
    /** The context property {@code logback.xml} prints in front of each blkstack line. */
    static final String PREFIX_PROPERTY = "blkstack.log.prefix";

    private LogLevel() {
    }

    /**
     * Sets {@code io.blkstack} to {@code level} (one of {@code StackConfig.LOG_LEVELS}) and the line
     * prefix to {@code prefix}; returns false, changing nothing, when the SLF4J backend in use is
     * not Logback (a class path of one's own).
     */
    static boolean apply(String prefix, String level) {
        Level parsed = Level.toLevel(level.toUpperCase(Locale.ROOT), null);
        if (parsed == null) {
            throw new IllegalArgumentException("log level '" + level + "' is not a level");
        }
        if (!(LoggerFactory.getILoggerFactory() instanceof LoggerContext context)) {
            return false;
        }
        context.putProperty(PREFIX_PROPERTY, prefix);
        Logger logger = context.getLogger(BLKSTACK_LOGGER);
        logger.setLevel(parsed);
        return true;
    }
}
