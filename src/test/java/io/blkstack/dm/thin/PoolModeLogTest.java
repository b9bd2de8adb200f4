package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.TestKernel;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.slf4j.LoggerFactory;

/**
 * A thin pool logs each change of its mode, in dm-thin's status words: a full pool with
 * {@code error_if_no_space} goes from {@code rw} to {@code out_of_data_space} when a write needs a
 * block it does not have. Real kernel, the pool of {@link ThinNoSpaceTimeoutTest}; the lines are
 * taken from the pool's SLF4J logger.
 */
class PoolModeLogTest {

    // Proves: filling the pool logs nothing about modes; the first write that finds no block logs
    // exactly one "mode rw -> out_of_data_space" line naming the pool, and the status agrees.
    @Test
    void outOfDataSpaceIsLoggedOnce() throws Exception {
        Logger poolLog = (Logger) LoggerFactory.getLogger(Pool.class);
        ListAppender<ILoggingEvent> lines = new ListAppender<>();
        lines.start();
        poolLog.addAppender(lines);
        try (TestKernel tk = new TestKernel("pool-mode");
                ThinNoSpaceTimeoutTest.SimPool p = new ThinNoSpaceTimeoutTest.SimPool(tk.kernel, " 1 error_if_no_space")) {
            p.fill();
            assertEquals(List.of(), modeLines(lines), "no mode change while blocks are free");
            int block = ThinNoSpaceTimeoutTest.BLOCKS;
            BioStatus fifth = p.io.write(p.vol, (long) block * ThinNoSpaceTimeoutTest.BLOCK,
                    ThinTargetTest.pattern(block, 4096), 0);
            assertEquals(BioStatus.NOSPC, fifth);
            BioStatus sixth = p.io.write(p.vol, (long) (block + 1) * ThinNoSpaceTimeoutTest.BLOCK,
                    ThinTargetTest.pattern(block + 1, 4096), 0);
            assertEquals(BioStatus.NOSPC, sixth);
            assertEquals(List.of("thin-pool pool: mode rw -> out_of_data_space (no free data block)"), modeLines(lines));
            assertTrue(p.status().contains(" out_of_data_space "), p.status());
        } finally {
            poolLog.detachAppender(lines);
        }
    }

    private static List<String> modeLines(ListAppender<ILoggingEvent> lines) {
        return lines.list.stream().map(ILoggingEvent::getFormattedMessage).filter(m -> m.contains(": mode ")).toList();
    }
}
