package io.blkstack.cli;

import java.io.PrintStream;
import me.tongfei.progressbar.ConsoleProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

/**
 * The progress bars of the long-running commands ({@code scenario run}, {@code scenario stats},
 * {@code bench stack}), drawn on stderr the way {@code check} draws its own: only on a terminal,
 * never with {@code --no-progress}, and never for a single step, so piped output stays clean.
 */
final class ProgressBars {

    private ProgressBars() {
    }

    /** A bar of {@code steps} steps called {@code task}, or null when there should be none. */
    static ProgressBar open(String task, long steps, boolean disabled) {
        if (disabled || steps < 2 || !CheckCommand.onTerminal()) {
            return null;
        }
        PrintStream err = System.err;
        return new ProgressBarBuilder().setTaskName(task).setInitialMax(steps).setStyle(ProgressBarStyle.ASCII)
                .setUpdateIntervalMillis(250).setConsumer(new ConsoleProgressBarConsumer(err)).showSpeed().build();
    }

    /** Advances {@code bar} by one step with {@code message}; nothing without a bar. */
    static void step(ProgressBar bar, String message) {
        if (bar != null) {
            bar.step();
            bar.setExtraMessage(message);
        }
    }

    /** Closes {@code bar}, if there is one. */
    static void close(ProgressBar bar) {
        if (bar != null) {
            bar.close();
        }
    }
}
