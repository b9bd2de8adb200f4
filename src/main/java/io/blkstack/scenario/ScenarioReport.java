package io.blkstack.scenario;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;

/**
 * The {@code --report DIR} output: {@code report.md} with the table and the knot of every finding,
 * and one PNG per scenario ({@code <name>.png}, drawn with XChart) of the reserve levels and the
 * completed I/O over virtual time, the legacy run beside the fixed one.
 */
public final class ScenarioReport {

    static final int WIDTH = 640;
    static final int HEIGHT = 400;
    /** Probe period of the plotted runs (virtual time). */
    public static final long SAMPLE_PERIOD_NANOS = 100_000;

    private ScenarioReport() {
    }

    /** Writes the Markdown report and the plots; returns the report's path. */
    public static Path write(Path dir, List<ScenarioRun> runs, Map<String, List<Plot>> plots, String table) throws IOException {
        Files.createDirectories(dir);
        StringBuilder md = new StringBuilder();
        md.append("# blkstack seed scenarios\n\n```\n").append(table).append("```\n\n");
        for (Map.Entry<String, List<Plot>> e : plots.entrySet()) {
            String file = e.getKey() + ".png";
            writePng(dir.resolve(file), e.getKey(), e.getValue());
            md.append("![").append(e.getKey()).append("](").append(file).append(")\n\n");
        }
        for (ScenarioRun r : runs) {
            if (!r.finding()) {
                continue;
            }
            md.append("## ").append(r.scenario()).append(" (seed ").append(r.seed()).append(") ").append(r.variant())
                    .append(", ").append(r.engine().key()).append(": ").append(r.outcome()).append("\n\n");
            if (!r.replay().isEmpty()) {
                md.append("Replay: `").append(r.replay()).append("`\n\n");
            }
            md.append(r.note()).append("\n\n```\n").append(r.knot()).append("\n```\n\n");
        }
        Path report = dir.resolve("report.md");
        Files.writeString(report, md.toString());
        return report;
    }

    /** One plotted run: its label and samples. */
    public record Plot(String label, Probe.Series series) {
    }

    /** Draws the plots of one scenario side by side in one PNG. */
    private static void writePng(Path file, String scenario, List<Plot> plots) throws IOException {
        List<XYChart> charts = new java.util.ArrayList<>();
        for (Plot p : plots) {
            XYChart chart = new XYChartBuilder().width(WIDTH).height(HEIGHT).title(scenario + " — " + p.label())
                    .xAxisTitle("virtual time (ms)").yAxisTitle("reserve level / completed I/O").build();
            Probe.Series s = p.series();
            if (s.isEmpty()) {
                chart.addSeries("no samples", new double[] {0}, new double[] {0});
            } else {
                for (int i = 0; i < s.poolNames().size(); i++) {
                    chart.addSeries(s.poolNames().get(i), s.timesMs(), s.reserveLevels().get(i));
                }
                chart.addSeries("completed I/O", s.timesMs(), s.completedIo());
            }
            charts.add(chart);
        }
        java.awt.image.BufferedImage out = new java.awt.image.BufferedImage(WIDTH * charts.size(), HEIGHT,
                java.awt.image.BufferedImage.TYPE_INT_RGB);
        java.awt.Graphics2D g = out.createGraphics();
        for (int i = 0; i < charts.size(); i++) {
            g.drawImage(BitmapEncoder.getBufferedImage(charts.get(i)), i * WIDTH, 0, null);
        }
        g.dispose();
        javax.imageio.ImageIO.write(out, "png", file.toFile());
    }
}
