package org.referraladapter.validator;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.parser.DataFormatException;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.parser.StrictErrorHandler;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;

/**
 * Loads the conformance resources (StructureDefinition, CodeSystem, ValueSet, SearchParameter)
 * found in the JSON files of a directory tree, such as fhir_profiles/ or an unpacked FHIR package.
 * Other JSON (package.json, examples) is skipped.
 */
final class ConformanceLoader {

	private static final Set<String> CONFORMANCE_TYPES =
			Set.of("StructureDefinition", "CodeSystem", "ValueSet", "SearchParameter");

	private final FhirContext myContext;
	private final PrintStream myLog;

	ConformanceLoader(FhirContext theContext, PrintStream theLog) {
		myContext = theContext;
		myLog = theLog;
	}

	/** Adds every conformance resource under the directory; returns how many were added. */
	int load(Path theDirectory, PrePopulatedValidationSupport theTarget) throws IOException {
		List<Path> files;
		try (Stream<Path> walk = Files.walk(theDirectory)) {
			files = walk.filter(p -> Files.isRegularFile(p) && p.toString().endsWith(".json"))
					.sorted()
					.toList();
		}
		// Strict: a broken profile must fail loudly rather than half-load and validate wrongly.
		IParser parser = myContext.newJsonParser().setParserErrorHandler(new StrictErrorHandler());
		int count = 0;
		for (Path file : files) {
			String text = Files.readString(file, StandardCharsets.UTF_8);
			String resourceType = ResourceTypeSniffer.resourceType(text);
			if (resourceType == null) {
				continue; // package.json and other non-resource JSON
			}
			if (resourceType.equals("Bundle")) {
				Bundle bundle = (Bundle) parse(parser, text, file);
				for (Bundle.BundleEntryComponent entry : bundle.getEntry()) {
					IBaseResource resource = entry.getResource();
					if (resource != null && CONFORMANCE_TYPES.contains(resource.fhirType())) {
						theTarget.addResource(resource);
						count++;
					}
				}
			} else if (CONFORMANCE_TYPES.contains(resourceType)) {
				theTarget.addResource(parse(parser, text, file));
				count++;
			}
		}
		myLog.printf("fhir-validator: loaded %d conformance resources from %s%n", count, theDirectory);
		return count;
	}

	private static IBaseResource parse(IParser theParser, String theText, Path theFile) {
		try {
			return theParser.parseResource(theText);
		} catch (DataFormatException e) {
			throw new IllegalArgumentException("cannot parse " + theFile + ": " + e.getMessage(), e);
		}
	}
}
