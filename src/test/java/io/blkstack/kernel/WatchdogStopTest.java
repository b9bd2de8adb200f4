package io.blkstack.kernel;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Closing a kernel stops its hung-task watchdog at once, whatever its period: the watchdog's
 * sleep ends on the stop request. (It used to sleep its whole period, a quarter of the threshold,
 * ignoring the request, which held {@code serve}'s exit for up to 7.5 s with the default 30 s
 * threshold.)
 */
class WatchdogStopTest {

    // A watchdog with a one-day threshold sleeps six hours between scans; the kernel's close must
    // still return (the timeout only bounds a failing run; nothing here measures time).
    @Test
    @Timeout(60)
    void closeStopsAWatchdogInTheMiddleOfItsPeriod() {
        Kernel kernel = Kernel.builder().name("watchdog-stop").memory(1 << 20)
                .watchdog(Duration.ofDays(1), r -> { }).build();
        Task watchdog = null;
        for (Task t : kernel.scheduler().tasks()) {
            if (t.name().equals("hung-task-watchdog")) {
                watchdog = t;
            }
        }
        assertTrue(watchdog != null, "no watchdog task among " + kernel.scheduler().tasks());
        try (Kernel.Attachment self = kernel.attach("test")) {
            assertTrue(watchdog.awaitWait(w -> w instanceof HungTaskWatchdog, 30_000_000_000L) != null,
                    "the watchdog never began its sleep");
        }
        kernel.close();
        assertTrue(watchdog.hasExited(), "the watchdog task is still running after the kernel closed");
    }
}
