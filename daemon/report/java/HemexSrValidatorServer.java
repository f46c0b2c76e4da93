// SPDX-License-Identifier: Apache-2.0
// A long-lived pixelmed DicomSRValidator: the JVM start and the validator's XSLT
// compilation (most of the 5-10 s a one-shot DicomSRValidator run takes) are paid once.
// Reads one file path per line on stdin; for each, prints what
// `DicomSRValidator <path>` prints (the same options as its command line defaults),
// then a line "@@HEMEX-END@@". Started by daemon/report/warm_validator.py with
// `java <this file>` (source-file mode, JDK 11 and later).
//
// One change to how it runs, none to what it checks: pixelmed's XSLT reads its context
// group definitions (DicomContextGroupsSource.xml, 650 kB) with document(), and its URI
// resolver returns that file without a system ID, so the JDK's XSLTC cannot recognise it
// as already loaded and parses and indexes it again at every lookup: about 77 times per
// SR, 1.3-2.4 s of the validation. Giving the resolved file its own name as system ID
// lets XSLTC load it once per pass. The output is the same, byte for byte
// (tests/test_report_builders.py::test_the_warm_validator_gives_the_one_shot_verdict).
// If pixelmed's internals differ from what this expects, it runs as it came.
import com.pixelmed.validate.DicomSRValidator;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import javax.xml.transform.Source;
import javax.xml.transform.Transformer;
import javax.xml.transform.URIResolver;

public class HemexSrValidatorServer {
    public static void main(String[] args) throws Exception {
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        DicomSRValidator validator = new DicomSRValidator();
        nameResolvedDocuments(validator);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        out.println("@@HEMEX-READY@@");
        String path;
        while ((path = in.readLine()) != null) {
            String result;
            try {
                // describe=false, matchCase=true, ambiguous=false, order=false, templateId=false:
                // the command line's defaults.
                result = validator.validate(path, false, true, false, false, false);
            } catch (Exception e) {
                StringWriter trace = new StringWriter();
                e.printStackTrace(new PrintWriter(trace));
                result = "Error: validator exception: " + trace;
            }
            out.println(result);
            out.println("@@HEMEX-END@@");
        }
    }

    /** Resolved documents (all but the per-SR FoundItems.xml) get their name as system ID. */
    static void nameResolvedDocuments(DicomSRValidator validator) {
        try {
            for (String name : new String[] {"transformerPass1", "transformerPass2"}) {
                Field field = DicomSRValidator.class.getDeclaredField(name);
                field.setAccessible(true);
                Transformer transformer = (Transformer) field.get(validator);
                URIResolver original = transformer.getURIResolver();
                if (original == null) {
                    continue;
                }
                transformer.setURIResolver((href, base) -> {
                    Source source = original.resolve(href, base);
                    if (source != null && source.getSystemId() == null && !"FoundItems.xml".equals(href)) {
                        source.setSystemId(href);
                    }
                    return source;
                });
            }
        } catch (ReflectiveOperationException | RuntimeException e) {
            // pixelmed's fields are not what this expects: validate as it came (slower).
        }
    }
}
