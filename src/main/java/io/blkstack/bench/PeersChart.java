package io.blkstack.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.CategoryChartBuilder;
import org.knowm.xchart.style.Styler;

/**
 * The bar chart of {@code bench/nbd-peers.sh}: one group of bars per fio job, one bar per server
 * (blkstack, nbdkit, qemu-nbd, the io_uring ceiling, ...), the height the median throughput of the
 * rounds, in MiB/s or, with a reference server, as a fraction of that server's median for the same
 * job (a 4 KiB job and a 1 MiB job differ by two orders of magnitude, so absolute bars of one
 * hide the other). Draws what it is given; it judges nothing.
 *
 * <p>Input: one line per job and server, tab-separated: {@code job server median min max}, the
 * figures in MiB/s (min and max are the slowest and fastest round); blank lines and lines starting
 * with {@code #} are skipped. Jobs and servers appear in the chart in the order they first appear.
 */
public final class PeersChart {

    /** Bounds, so a wrong file cannot ask for a chart nobody can read. */
    public static final int JOBS_MAX = 64;
    public static final int SERVERS_MAX = 16;
    public static final int PIXELS_MAX = 8192;

    /** One job's figure on one server, MiB/s. */
    public record Row(String job, String server, double median, double min, double max) {

        /** Checks the values, with the bad one in the message. */
        public Row {
            if (job.isEmpty() || server.isEmpty()) {
                throw new IllegalArgumentException("empty job or server name");
            }
            if (!(min >= 0 && min <= median && median <= max && Double.isFinite(max))) {
                throw new IllegalArgumentException(job + " on " + server + ": need 0 <= min <= median <= max, have "
                        + min + " " + median + " " + max);
            }
        }
    }

    private PeersChart() {
    }

    /** Reads the rows of {@code file}; a bad line fails with its number and what is wrong. */
    public static List<Row> read(Path file) throws IOException {
        List<Row> rows = new ArrayList<>();
        List<String> lines = Files.readAllLines(file);
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i).strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            String[] fields = line.split("\t");
            if (fields.length != 5) {
                throw new IllegalArgumentException(file + ":" + (i + 1) + ": expected 5 tab-separated fields (job server"
                        + " median min max), found " + fields.length);
            }
            try {
                rows.add(new Row(fields[0], fields[1], Double.parseDouble(fields[2]), Double.parseDouble(fields[3]),
                        Double.parseDouble(fields[4])));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(file + ":" + (i + 1) + ": " + e.getMessage(), e);
            }
        }
        if (rows.isEmpty()) {
            throw new IllegalArgumentException(file + ": no rows");
        }
        return rows;
    }

    /**
     * Draws the rows as a grouped bar chart and writes it to {@code png}.
     *
     * @param reference the server whose median is 1.0 for each job, or null for MiB/s; a job that
     *     server lacks is left out
     */
    public static void write(List<Row> rows, String reference, String title, int width, int height, Path png)
            throws IOException {
        if (width < 200 || width > PIXELS_MAX || height < 150 || height > PIXELS_MAX) {
            throw new IllegalArgumentException("chart size " + width + "x" + height + " not within 200x150.."
                    + PIXELS_MAX + "x" + PIXELS_MAX);
        }
        Set<String> jobs = new LinkedHashSet<>();
        Map<String, Map<String, Double>> byServer = new LinkedHashMap<>();
        Map<String, Double> referenceMedians = new LinkedHashMap<>();
        for (Row r : rows) {
            if (r.server().equals(reference) && r.median() > 0) {
                referenceMedians.put(r.job(), r.median());
            }
        }
        if (reference != null && referenceMedians.isEmpty()) {
            throw new IllegalArgumentException("no job has a positive median on the reference server " + reference);
        }
        for (Row r : rows) {
            if (reference != null && !referenceMedians.containsKey(r.job())) {
                continue;
            }
            jobs.add(r.job());
            Map<String, Double> medians = byServer.computeIfAbsent(r.server(), s -> new LinkedHashMap<>());
            if (medians.put(r.job(), r.median()) != null) {
                throw new IllegalArgumentException("job " + r.job() + " on " + r.server() + " appears twice");
            }
        }
        if (jobs.size() > JOBS_MAX || byServer.size() > SERVERS_MAX) {
            throw new IllegalArgumentException(jobs.size() + " jobs and " + byServer.size() + " servers; at most "
                    + JOBS_MAX + " and " + SERVERS_MAX);
        }
        String yTitle = reference == null ? "median MiB/s" : "median / median of " + reference;
        CategoryChart chart = new CategoryChartBuilder().width(width).height(height).title(title)
                .xAxisTitle("fio job").yAxisTitle(yTitle).build();
        Styler styler = chart.getStyler();
        styler.setLegendPosition(Styler.LegendPosition.OutsideS);
        styler.setLegendLayout(Styler.LegendLayout.Horizontal);
        chart.getStyler().setXAxisLabelRotation(20);
        List<String> jobList = List.copyOf(jobs);
        for (Map.Entry<String, Map<String, Double>> e : byServer.entrySet()) {
            List<Double> values = new ArrayList<>(jobList.size());
            for (String job : jobList) {
                // A server without this job (only blkstack runs some) gets no bar.
                Double v = e.getValue().get(job);
                double scale = reference == null ? 1 : referenceMedians.get(job);
                values.add(v == null ? 0 : v / scale);
            }
            chart.addSeries(e.getKey(), jobList, values);
        }
        BitmapEncoder.saveBitmap(chart, png.toString(), BitmapEncoder.BitmapFormat.PNG);
    }
}
