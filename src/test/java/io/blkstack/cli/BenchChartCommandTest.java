package io.blkstack.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.nio.file.Files;
import java.nio.file.Path;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code blkstack bench chart} (the PNG of bench/nbd-peers.sh) on fixed input: a table of medians
 * becomes a PNG of the asked size with bars drawn in it; a malformed line is refused with its line
 * number and no file is written.
 */
class BenchChartCommandTest {

    @TempDir
    Path dir;

    @Test
    void drawsTheTableAsAPngOfTheAskedSize() throws Exception {
        Path tsv = dir.resolve("medians.tsv");
        Files.writeString(tsv, """
                # job server median min max (MiB/s)
                randread-4k\tblkstack\t180.5\t170\t190
                randread-4k\tnbdkit\t160\t150\t161
                randread-4k\tceiling\t900\t880\t950
                seqread-1m\tblkstack\t1500\t1400\t1600
                seqread-1m\tnbdkit\t1700\t1650\t1800
                seqread-1m\tceiling\t6000\t5900\t6100
                """);
        Path png = dir.resolve("chart.png");
        CommandRun run = CommandRun.run("bench", "chart", "--width", "640", "--height", "400", "--relative-to", "ceiling", tsv.toString(), png.toString());
        assertEquals(0, run.exitCode(), run.err());
        BufferedImage image = ImageIO.read(png.toFile());
        assertNotNull(image, "not a PNG");
        assertEquals(640, image.getWidth());
        assertEquals(400, image.getHeight());
        assertTrue(distinctColours(image) > 4, "the chart draws bars of several series, not a blank image");

        run = CommandRun.run("bench", "chart", "--relative-to", "qemu-nbd", tsv.toString(), png.toString());
        assertEquals(1, run.exitCode());
        assertTrue(run.err().contains("no job has a positive median on the reference server qemu-nbd"), run.err());
    }

    @Test
    void aBadLineIsRefusedWithItsNumber() throws Exception {
        Path tsv = dir.resolve("bad.tsv");
        Files.writeString(tsv, "randread-4k\tblkstack\t180\t170\t190\nseqread-1m\tnbdkit\t1700\t1800\t1750\n");
        Path png = dir.resolve("chart.png");
        CommandRun run = CommandRun.run("bench", "chart", tsv.toString(), png.toString());
        assertEquals(1, run.exitCode());
        assertTrue(run.err().contains(tsv + ":2: seqread-1m on nbdkit: need 0 <= min <= median <= max"), run.err());
        assertFalse(Files.exists(png));
    }

    private static int distinctColours(BufferedImage image) {
        java.util.Set<Integer> colours = new java.util.HashSet<>();
        for (int y = 0; y < image.getHeight(); y += 2) {
            for (int x = 0; x < image.getWidth(); x += 2) {
                colours.add(image.getRGB(x, y));
            }
        }
        return colours.size();
    }
}
