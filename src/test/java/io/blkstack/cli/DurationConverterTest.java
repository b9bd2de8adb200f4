package io.blkstack.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.units.Durations;
import java.io.PrintWriter;
import java.io.StringWriter;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** Durations on the command line ({@code serve --drain-timeout}, {@code --hung-task-timeout}): units required, bounded. */
class DurationConverterTest {

    @Test
    void wholeNumbersWithAUnit() {
        assertEquals(30_000_000_000L, Durations.parse("30s"));
        assertEquals(1_500_000_000L, Durations.parse("1500ms"));
        assertEquals(250_000L, Durations.parse("250us"));
        assertEquals(7L, Durations.parse("7ns"));
        assertEquals(0L, Durations.parse("0s"));
        assertEquals(86_400_000_000_000L, Durations.parse("86400s"));
    }

    @Test
    void bareNumbersFractionsUnknownUnitsAndMoreThanADayAreRefusedNamingTheValue() {
        for (String bad : new String[] {"30", "1.5s", "2d", "s", "", "-1s", "86401s", "30 s"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Durations.parse(bad));
            assertTrue(e.getMessage().startsWith("'" + bad + "'"), e.getMessage());
        }
    }

    @Test
    void serveRefusesABadDrainTimeoutAsAUsageError() {
        CommandLine commandLine = Main.commandLine();
        StringWriter err = new StringWriter();
        commandLine.setErr(new PrintWriter(err, true));
        commandLine.setOut(new PrintWriter(new StringWriter(), true));
        assertEquals(ExitCodes.USAGE, commandLine.execute("serve", "--drain-timeout", "30", "--listen", "127.0.0.1:0"));
        assertTrue(err.toString().contains("'30' is not a duration"), err.toString());
    }
}
