package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/** What {@link KnownDataRun} answers: only inside a run found since the last punch ended. */
class KnownDataRunTest {

    // Nothing is known at first; a remembered run answers inside it and not outside.
    @Test
    void answersOnlyInsideTheRun() {
        KnownDataRun run = new KnownDataRun();
        assertEquals(-1, run.endOfDataAt(0));
        run.remember(4096, 65536, run.epoch());
        assertEquals(65536, run.endOfDataAt(4096));
        assertEquals(65536, run.endOfDataAt(65535));
        assertEquals(-1, run.endOfDataAt(4095));
        assertEquals(-1, run.endOfDataAt(65536));
    }

    // Runs of one epoch that touch are joined (random READs find the whole file); one that does
    // not touch replaces the run.
    @Test
    void touchingRunsJoinOthersReplace() {
        KnownDataRun run = new KnownDataRun();
        long epoch = run.epoch();
        run.remember(8192, 16384, epoch);
        run.remember(0, 8192, epoch);
        assertEquals(16384, run.endOfDataAt(0));
        run.remember(12288, 32768, epoch);
        assertEquals(32768, run.endOfDataAt(0));
        run.remember(65536, 131072, epoch);
        assertEquals(-1, run.endOfDataAt(0));
        assertEquals(131072, run.endOfDataAt(65536));
    }

    // A punch that ends forgets the run, and a run found before it (asked in the old epoch, as a
    // READ racing the punch would) is not remembered after it.
    @Test
    void aPunchForgetsAndARunFoundBeforeItDoesNotCount() {
        KnownDataRun run = new KnownDataRun();
        long before = run.epoch();
        run.remember(0, 1 << 20, before);
        run.punched();
        assertEquals(-1, run.endOfDataAt(0));
        run.remember(0, 1 << 20, before);
        assertEquals(-1, run.endOfDataAt(0));
        run.remember(0, 4096, run.epoch());
        assertEquals(4096, run.endOfDataAt(0));
    }
}
