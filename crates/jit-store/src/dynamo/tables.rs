//! Creating the two tables, for tests and for a local run on a DynamoDB emulator. A deployment
//! creates them with `deploy/aws/template.yaml`; the function never calls this, so its role is
//! not allowed `CreateTable` or `UpdateTimeToLive` (`crates/jit-lambda/tests/iam.rs` leaves this
//! file out of the operations it holds the role to, and checks that no code the function links
//! calls `create_tables`).

use super::{DynamoStore, backend, build_err};
use crate::StoreError;
use aws_sdk_dynamodb::Client;

impl DynamoStore {
    /// Creates both tables as `deploy/aws/template.yaml` defines them (keys, the six indexes,
    /// on-demand billing, time-to-live on `ttl`): for tests, and for a local run on a DynamoDB
    /// emulator. A deployment creates them with the template.
    pub async fn create_tables(
        sdk: &aws_config::SdkConfig,
        table: &str,
        nonces: &str,
    ) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
            Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
        };
        let client = Client::new(sdk);
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_err)
        };
        let key_el = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(build_err)
        };
        let mut attrs = vec![attr("pk")?, attr("sk")?];
        let mut gsis = Vec::new();
        for i in 1..=6 {
            attrs.push(attr(&format!("g{i}pk"))?);
            attrs.push(attr(&format!("g{i}sk"))?);
            gsis.push(
                GlobalSecondaryIndex::builder()
                    .index_name(format!("gsi{i}"))
                    .key_schema(key_el(&format!("g{i}pk"), KeyType::Hash)?)
                    .key_schema(key_el(&format!("g{i}sk"), KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(build_err)?,
            );
        }
        client
            .create_table()
            .table_name(table)
            .set_attribute_definitions(Some(attrs))
            .key_schema(key_el("pk", KeyType::Hash)?)
            .key_schema(key_el("sk", KeyType::Range)?)
            .set_global_secondary_indexes(Some(gsis))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(backend)?;
        client
            .create_table()
            .table_name(nonces)
            .attribute_definitions(attr("pk")?)
            .key_schema(key_el("pk", KeyType::Hash)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(backend)?;
        for t in [table, nonces] {
            client
                .update_time_to_live()
                .table_name(t)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name("ttl")
                        .build()
                        .map_err(build_err)?,
                )
                .send()
                .await
                .map_err(backend)?;
        }
        Ok(())
    }
}
